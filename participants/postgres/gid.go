package postgres

import (
	"fmt"
	"strings"

	"github.com/txcoord/txcoord/participants"
)

// MaxGIDBytes is the longest GID accepted. PostgreSQL's limit for a
// transaction identifier is 200 bytes including the terminating NUL
// (GIDSIZE), so 199 bytes is the most PREPARE TRANSACTION takes.
const MaxGIDBytes = 199

// validGIDByte reports whether c may appear in a GID or a GID prefix. The set
// is deliberately small (letters, digits, '_', '.', ':', '-'): it covers the
// `<prefix>:<cluster id>:<txid>:<participant>` layout, needs no quoting
// inside a SQL string literal, and survives logs and shells unchanged.
func validGIDByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '_' || c == '.' || c == ':' || c == '-':
		return true
	}
	return false
}

// ValidateGID checks that gid can be used with PREPARE TRANSACTION: 1 to
// MaxGIDBytes bytes from [A-Za-z0-9_.:-]. The error wraps
// participants.ErrBadOperation.
func ValidateGID(gid string) error {
	if gid == "" {
		return fmt.Errorf("gid is empty: %w", participants.ErrBadOperation)
	}
	if len(gid) > MaxGIDBytes {
		return fmt.Errorf("gid is %d bytes, more than the %d PostgreSQL accepts: %w",
			len(gid), MaxGIDBytes, participants.ErrBadOperation)
	}
	if i := invalidGIDByte(gid); i >= 0 {
		return fmt.Errorf("gid %q has byte %q at offset %d; allowed are letters, digits and _ . : -: %w",
			gid, gid[i], i, participants.ErrBadOperation)
	}
	return nil
}

// validatePrefix checks an InDoubt prefix: like a GID, but it may be empty.
func validatePrefix(prefix string) error {
	if len(prefix) > MaxGIDBytes {
		return fmt.Errorf("gid prefix is %d bytes, more than %d: %w",
			len(prefix), MaxGIDBytes, participants.ErrBadOperation)
	}
	if i := invalidGIDByte(prefix); i >= 0 {
		return fmt.Errorf("gid prefix %q has byte %q at offset %d; allowed are letters, digits and _ . : -: %w",
			prefix, prefix[i], i, participants.ErrBadOperation)
	}
	return nil
}

func invalidGIDByte(s string) int {
	for i := 0; i < len(s); i++ {
		if !validGIDByte(s[i]) {
			return i
		}
	}
	return -1
}

// quoteLiteral returns s as a SQL string literal. GIDs are validated first,
// so this never has anything to escape; it doubles quotes anyway so that it
// stays correct if the GID charset ever grows (standard_conforming_strings is
// on by default since PostgreSQL 9.1; a backslash is never accepted in a GID).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// likePrefixPattern returns a LIKE pattern (with ESCAPE '\') matching every
// string that starts with prefix: '_' and '%' in the prefix match themselves.
func likePrefixPattern(prefix string) string {
	var b strings.Builder
	b.Grow(len(prefix) + 4)
	for i := 0; i < len(prefix); i++ {
		switch c := prefix[i]; c {
		case '\\', '%', '_':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('%')
	return b.String()
}
