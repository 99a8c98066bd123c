// Command txcerts writes a development CA and certificates for txcoord
// nodes and clients. For tests and local clusters only.
//
//	txcerts --dir .data/certs --nodes n1,n2,n3 --clients app,ops
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/txcoord/txcoord/internal/devcerts"
)

func main() {
	fs := flag.NewFlagSet("txcerts", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, "txcerts — development CA and certificates for txcoord (never for production).\n\n"+
			"Example:\n  txcerts --dir .data/certs --nodes n1,n2,n3 --clients app,ops\n\nFlags:\n")
		fs.PrintDefaults()
	}
	dir := fs.String("dir", ".data/certs", "output directory (created; files mode 0600)")
	nodes := fs.String("nodes", "n1,n2,n3", "comma-separated node identities (server and client use)")
	clients := fs.String("clients", "app,ops", "comma-separated client identities")
	hosts := fs.String("hosts", "", "extra DNS names or IPs for node certificates, comma-separated")
	fs.Parse(os.Args[1:])
	ca, err := devcerts.NewCA("txcoord dev CA")
	if err != nil {
		fmt.Fprintln(os.Stderr, "txcerts:", err)
		os.Exit(1)
	}
	var extra []string
	if *hosts != "" {
		extra = strings.Split(*hosts, ",")
	}
	for _, group := range []struct {
		names string
		hosts []string
	}{{*nodes, extra}, {*clients, nil}} {
		for _, n := range strings.Split(group.names, ",") {
			if n = strings.TrimSpace(n); n == "" {
				continue
			}
			f, err := ca.WriteIdentity(*dir, n, group.hosts...)
			if err != nil {
				fmt.Fprintln(os.Stderr, "txcerts:", err)
				os.Exit(1)
			}
			fmt.Printf("%s: cert %s key %s ca %s\n", n, f.Cert, f.Key, f.CA)
		}
	}
}
