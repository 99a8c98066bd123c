package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// RaftSource is an Identifier for hashicorp/raft's TCP transport. Every
// node lists the same Raft addresses (the configuration is replicated), so
// a proxy in front of node D cannot tell by address who dialled it; the
// first RPC on a connection can: it is a type byte followed by a msgpack
// map whose RPCHeader fields (inlined) carry the sender's server ID. Raft
// connections are opened by the sender of requests, and every RPC type
// (AppendEntries, RequestVote, RequestPreVote, InstallSnapshot, TimeoutNow)
// carries the header, so one connection always belongs to one sender.
func RaftSource(r io.Reader) (string, []byte, error) {
	var seen bytes.Buffer
	tee := io.TeeReader(r, &seen)
	var typ [1]byte
	if _, err := io.ReadFull(tee, typ[:]); err != nil {
		return "", seen.Bytes(), fmt.Errorf("raft rpc type: %w", err)
	}
	var msg map[string]any
	if err := codec.NewDecoder(tee, &codec.MsgpackHandle{}).Decode(&msg); err != nil {
		return "", seen.Bytes(), fmt.Errorf("raft rpc (type %d): %w", typ[0], err)
	}
	switch id := msg["ID"].(type) {
	case []byte:
		if len(id) > 0 {
			return string(id), seen.Bytes(), nil
		}
	case string:
		if id != "" {
			return id, seen.Bytes(), nil
		}
	}
	return "", seen.Bytes(), errors.New("raft rpc without a sender ID (protocol version < 3?)")
}
