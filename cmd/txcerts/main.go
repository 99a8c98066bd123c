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
	nodes := fs.String("nodes", "n1,n2,n3", "comma-separated node identities (peer certificates: serverAuth+clientAuth; refused as API clients)")
	clients := fs.String("clients", "app,ops", "comma-separated client identities (clientAuth only; refused on the Raft port); must differ from node names")
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
	nodeNames := map[string]bool{}
	for _, n := range strings.Split(*nodes, ",") {
		nodeNames[strings.TrimSpace(n)] = true
	}
	for _, n := range strings.Split(*clients, ",") {
		if n = strings.TrimSpace(n); nodeNames[n] {
			fmt.Fprintf(os.Stderr, "txcerts: client %q has a node's name: server and client identities must be distinct\n", n)
			os.Exit(2)
		}
	}
	for _, group := range []struct {
		names string
		peer  bool
	}{{*nodes, true}, {*clients, false}} {
		for _, n := range strings.Split(group.names, ",") {
			if n = strings.TrimSpace(n); n == "" {
				continue
			}
			var f devcerts.Files
			var err error
			if group.peer {
				f, err = ca.WritePeer(*dir, n, extra...)
			} else {
				f, err = ca.WriteClient(*dir, n)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "txcerts:", err)
				os.Exit(1)
			}
			kind := "client"
			if group.peer {
				kind = "node"
			}
			fmt.Printf("%s %s: cert %s key %s ca %s\n", kind, n, f.Cert, f.Key, f.CA)
		}
	}
}
