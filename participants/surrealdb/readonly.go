package surrealdb

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/txcoord/txcoord/participants"
)

// maxQueryText bounds the SurrealQL text of one OpQuery.
const maxQueryText = 64 << 10

// checkReadOnly accepts a single SurrealQL SELECT that cannot write. It is
// conservative, not a parser: it tokenizes (skipping strings, quoted
// identifiers and comments) and refuses
//   - anything but exactly one statement that starts with SELECT;
//   - any word that starts a writing or session statement anywhere, even as a
//     field name (CREATE, UPDATE, UPSERT, DELETE, INSERT, RELATE, DEFINE,
//     REMOVE, ALTER, LET, BEGIN, COMMIT, CANCEL, LIVE, KILL, USE, SLEEP,
//     THROW, FOR, REBUILD, ACCESS, OPTION, INFO, SHOW, RETURN);
//   - calls into function families that can write or reach out: fn::
//     (user functions), http::, api::, file::, sequence::, ml::;
//   - file pointer literals (f"bucket:/path"), whose methods write.
//
// Refused queries fail with ErrUnsupported. It returns the statement without
// trailing semicolons.
func checkReadOnly(sql string) (string, error) {
	if len(sql) > maxQueryText {
		return "", fmt.Errorf("%w: query text of %d bytes exceeds %d", participants.ErrBadOperation, len(sql), maxQueryText)
	}
	if !utf8.ValidString(sql) {
		return "", fmt.Errorf("%w: query text is not UTF-8", participants.ErrBadOperation)
	}
	toks, err := tokenize(sql)
	if err != nil {
		return "", fmt.Errorf("%w: %v", participants.ErrUnsupported, err)
	}
	refuse := func(why string, args ...any) (string, error) {
		return "", fmt.Errorf("%w: OpQuery must be one read-only SELECT: %s", participants.ErrUnsupported, fmt.Sprintf(why, args...))
	}
	// Trailing semicolons end the statement; any other semicolon starts a second one.
	end := len(toks)
	for end > 0 && toks[end-1].kind == tokPunct && toks[end-1].text == ";" {
		end--
	}
	toks = toks[:end]
	if len(toks) == 0 {
		return refuse("empty query")
	}
	if toks[0].kind != tokWord || !strings.EqualFold(toks[0].text, "SELECT") {
		return refuse("it starts with %q", toks[0].text)
	}
	for i, t := range toks {
		switch t.kind {
		case tokPunct:
			if t.text == ";" {
				return refuse("more than one statement")
			}
		case tokWord:
			up := strings.ToUpper(t.text)
			if isForbiddenWord(up) {
				return refuse("%q is not allowed", t.text)
			}
			if i+1 < len(toks) && toks[i+1].kind == tokPunct && toks[i+1].text == "::" && isForbiddenFamily(strings.ToLower(t.text)) {
				return refuse("%s:: functions are not allowed", t.text)
			}
		case tokString:
			if t.prefix == 'f' || t.prefix == 'F' {
				return refuse("file pointers are not allowed")
			}
		}
	}
	return strings.TrimRightFunc(sql[:toks[len(toks)-1].end], unicode.IsSpace), nil
}

// isForbiddenWord: words that start statements that write or change the session.
func isForbiddenWord(up string) bool {
	switch up {
	case "CREATE", "UPDATE", "UPSERT", "DELETE", "INSERT", "RELATE",
		"DEFINE", "REMOVE", "ALTER", "REBUILD", "LET", "BEGIN",
		"COMMIT", "CANCEL", "LIVE", "KILL", "USE", "SLEEP",
		"THROW", "FOR", "ACCESS", "OPTION", "INFO", "SHOW",
		"RETURN", "IMPORT", "EXPORT":
		return true
	}
	return false
}

// isForbiddenFamily: function namespaces that can write or have effects
// outside the database.
func isForbiddenFamily(lower string) bool {
	switch lower {
	case "fn", "http", "api", "file", "sequence", "ml", "mod", "silo":
		return true
	}
	return false
}

type tokKind uint8

const (
	tokWord tokKind = iota + 1
	tokString
	tokIdent // `quoted` or ⟨quoted⟩ identifier
	tokNumber
	tokPunct
	tokParam
)

type token struct {
	kind   tokKind
	text   string
	prefix byte // string prefix letter (r, d, u, s, b, f) or 0
	end    int  // byte offset just past the token
}

// tokenize splits SurrealQL into tokens, dropping whitespace and comments.
func tokenize(s string) ([]token, error) {
	var out []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '-' && strings.HasPrefix(s[i:], "--"), c == '/' && strings.HasPrefix(s[i:], "//"), c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && strings.HasPrefix(s[i:], "/*"):
			j := strings.Index(s[i+2:], "*/")
			if j < 0 {
				return nil, fmt.Errorf("unterminated comment")
			}
			i += 2 + j + 2
		case c == '\'' || c == '"':
			j, err := skipQuoted(s, i, c)
			if err != nil {
				return nil, err
			}
			out = append(out, token{kind: tokString, text: s[i:j], end: j})
			i = j
		case c == '`':
			j, err := skipQuoted(s, i, '`')
			if err != nil {
				return nil, err
			}
			out = append(out, token{kind: tokIdent, text: s[i:j], end: j})
			i = j
		case strings.HasPrefix(s[i:], "⟨"):
			j := strings.Index(s[i:], "⟩")
			if j < 0 {
				return nil, fmt.Errorf("unterminated ⟨identifier⟩")
			}
			// ⟩ inside is escaped as \⟩
			for j > 0 && s[i+j-1] == '\\' {
				k := strings.Index(s[i+j+len("⟩"):], "⟩")
				if k < 0 {
					return nil, fmt.Errorf("unterminated ⟨identifier⟩")
				}
				j += len("⟩") + k
			}
			end := i + j + len("⟩")
			out = append(out, token{kind: tokIdent, text: s[i:end], end: end})
			i = end
		case c == '$':
			j := i + 1
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			out = append(out, token{kind: tokParam, text: s[i:j], end: j})
			i = j
		case isWordStart(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			// A one-letter prefix glued to a string: r'..', d"..", f'..' ...
			if j == i+1 && j < len(s) && (s[j] == '\'' || s[j] == '"') {
				k, err := skipQuoted(s, j, s[j])
				if err != nil {
					return nil, err
				}
				out = append(out, token{kind: tokString, text: s[i:k], prefix: c, end: k})
				i = k
				continue
			}
			out = append(out, token{kind: tokWord, text: s[i:j], end: j})
			i = j
		case c >= '0' && c <= '9':
			j := i
			for j < len(s) && (isWordByte(s[j]) || s[j] == '.') {
				j++
			}
			out = append(out, token{kind: tokNumber, text: s[i:j], end: j})
			i = j
		case c == ':' && strings.HasPrefix(s[i:], "::"):
			out = append(out, token{kind: tokPunct, text: "::", end: i + 2})
			i += 2
		case c >= 0x80:
			r, size := utf8.DecodeRuneInString(s[i:])
			if unicode.IsSpace(r) {
				i += size
				continue
			}
			out = append(out, token{kind: tokPunct, text: s[i : i+size], end: i + size})
			i += size
		default:
			out = append(out, token{kind: tokPunct, text: s[i : i+1], end: i + 1})
			i++
		}
	}
	return out, nil
}

// skipQuoted returns the offset just past the quoted text starting at i.
func skipQuoted(s string, i int, q byte) (int, error) {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated quoted text")
}

func isWordStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isWordByte(c byte) bool { return isWordStart(c) || (c >= '0' && c <= '9') }
