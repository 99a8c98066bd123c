package wal

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// keyCluster in the meta bucket holds the id of the cluster whose decisions
// the store holds. It is node-local metadata (not written by Apply, not in
// the Digest); it travels with snapshots, which copy the whole store.
var keyCluster = []byte("cluster")

// ErrOtherCluster: the store (or a snapshot) belongs to another cluster.
var ErrOtherCluster = errors.New("decision store belongs to another cluster")

// ClusterID returns the cluster id stamped on the store, "" if none (a store
// written before stamps existed).
func (s *Store) ClusterID() (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var id string
	err := s.db.View(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bucketMeta).Get(keyCluster))
		return nil
	})
	return id, err
}

// StampCluster records id as the store's cluster if it has none, and
// returns an error wrapping ErrOtherCluster if it is stamped with another:
// a data directory moved between clusters must not serve, since its
// decisions are about GIDs of the other cluster.
func (s *Store) StampCluster(id string) error {
	if id == "" {
		panic("wal: StampCluster with an empty cluster id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		switch have := string(meta.Get(keyCluster)); have {
		case id:
			return nil
		case "":
			return meta.Put(keyCluster, []byte(id))
		default:
			return fmt.Errorf("%w: the store is stamped %q, this node is configured for cluster %q", ErrOtherCluster, have, id)
		}
	})
}
