package postgres

import (
	"fmt"
	"strings"

	"github.com/txcoord/txcoord/participants"
)

// CheckStatement rejects SQL that cannot run inside a branch that will be
// prepared, before it is sent. The error wraps participants.ErrUnsupported
// (or participants.ErrBadOperation for an empty statement) and says what to
// do instead.
//
// Rejected:
//   - transaction control: BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK,
//     ABORT, SAVEPOINT, RELEASE, PREPARE (also PREPARE TRANSACTION and named
//     prepared statements, which would outlive the branch on the pooled
//     connection), DEALLOCATE, DISCARD;
//   - temporary objects: CREATE ... TEMP|TEMPORARY ..., SELECT ... INTO
//     TEMP|TEMPORARY, and any mention of the pg_temp schema (PostgreSQL
//     refuses to PREPARE a transaction that touched temporary objects);
//   - DECLARE ... WITH HOLD cursors;
//   - LISTEN, UNLISTEN, NOTIFY and pg_notify(...);
//   - session-level settings: SET without LOCAL (SET LOCAL, SET TRANSACTION
//     and SET CONSTRAINTS are fine) and RESET, which would leak into the
//     pooled connection's next transaction;
//   - COPY ... FROM STDIN / TO STDOUT, which Execute cannot stream.
//
// The check is lexical: it skips whitespace, comments (-- and nested /* */),
// string literals ('...', E'...', $tag$...$tag$) and quoted identifiers, and
// looks at keywords. It does not parse SQL, so it cannot see what functions,
// DO blocks, procedures or triggers do at run time (a function calling
// set_config(..., false) or creating a temp table passes). PostgreSQL still
// refuses to PREPARE a transaction that touched temporary objects or used
// LISTEN/NOTIFY, so such a branch votes NO rather than doing harm; a leaked
// session setting is the one thing only this check prevents. Only one
// statement per Execute reaches the server: the extended protocol refuses
// "multiple commands in a prepared statement".
func CheckStatement(sql string) error {
	toks := lexSQL(sql)
	if len(toks) == 0 {
		return fmt.Errorf("empty SQL statement: %w", participants.ErrBadOperation)
	}
	// Skip leading parentheses: "(SELECT ...) UNION ..." starts with '('.
	i := 0
	for i < len(toks) && toks[i].punct == '(' {
		i++
	}
	words := toks[i:]
	first := ""
	if len(words) > 0 {
		first = words[0].word
	}

	switch first {
	case "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release":
		return unsupported("%s: transaction control inside a branch; the coordinator begins, prepares and commits the transaction", strings.ToUpper(first))
	case "prepare", "deallocate":
		return unsupported("%s: prepared transactions and named prepared statements are managed by the coordinator; pass arguments to Execute instead", strings.ToUpper(first))
	case "discard":
		return unsupported("DISCARD: session reset is not allowed inside a branch")
	case "listen", "unlisten", "notify":
		return unsupported("%s: PostgreSQL cannot PREPARE a transaction that used LISTEN, UNLISTEN or NOTIFY", strings.ToUpper(first))
	case "set":
		second := wordAt(words, 1)
		switch second {
		case "local", "transaction", "constraints":
			// Transaction-scoped: reverts at commit/rollback.
		default:
			return unsupported("SET without LOCAL changes the session, which outlives the branch on a pooled connection; use SET LOCAL")
		}
	case "reset":
		return unsupported("RESET changes the session, which outlives the branch on a pooled connection; use SET LOCAL")
	case "create":
		// CREATE [OR REPLACE] [GLOBAL|LOCAL] {TEMP|TEMPORARY} [UNLOGGED] ... —
		// modifiers come before the object type; stop at the first other word.
		for _, t := range words[1:] {
			if t.word == "temp" || t.word == "temporary" {
				return unsupported("CREATE TEMPORARY: PostgreSQL cannot PREPARE a transaction that created temporary objects; use a regular table")
			}
			switch t.word {
			case "or", "replace", "global", "local", "unlogged", "recursive":
				continue
			}
			break
		}
	case "declare":
		// DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR [{WITH|WITHOUT} HOLD] FOR query
		for j := 1; j < len(words) && words[j].word != "for"; j++ {
			if words[j].word == "with" && wordAt(words, j+1) == "hold" {
				return unsupported("DECLARE ... WITH HOLD: a holdable cursor outlives the transaction and cannot be prepared; declare it WITHOUT HOLD")
			}
		}
	case "copy":
		for _, t := range words[1:] {
			if t.word == "stdin" || t.word == "stdout" {
				return unsupported("COPY FROM STDIN / TO STDOUT: Execute cannot stream COPY data; use INSERT or a server-side file")
			}
		}
	}

	for j, t := range toks {
		switch {
		case t.word == "pg_temp" || t.quoted == "pg_temp" || strings.HasPrefix(t.word, "pg_temp_"):
			return unsupported("pg_temp: PostgreSQL cannot PREPARE a transaction that touched temporary objects")
		case t.word == "pg_notify":
			return unsupported("pg_notify: PostgreSQL cannot PREPARE a transaction that used NOTIFY")
		case t.word == "into" && j > 0 && toks[j-1].word != "insert" && toks[j-1].word != "merge":
			// SELECT ... INTO [GLOBAL|LOCAL] {TEMP|TEMPORARY} [TABLE] name
			k := j + 1
			for k < len(toks) && (toks[k].word == "global" || toks[k].word == "local") {
				k++
			}
			if w := wordAt(toks, k); (w == "temp" || w == "temporary") && k+1 < len(toks) && (toks[k+1].word != "" || toks[k+1].quoted != "") {
				return unsupported("SELECT INTO TEMPORARY: PostgreSQL cannot PREPARE a transaction that created temporary objects; use a regular table")
			}
		}
	}
	return nil
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, participants.ErrUnsupported)...)
}

// sqlToken is a keyword or identifier (word, lower-cased), a quoted
// identifier (quoted, as written) or a punctuation byte (punct). Literals
// and comments produce no tokens.
type sqlToken struct {
	word   string
	quoted string
	punct  byte
}

func wordAt(toks []sqlToken, i int) string {
	if i < 0 || i >= len(toks) {
		return ""
	}
	return toks[i].word
}

// lexSQL splits sql into tokens, dropping whitespace, comments, string
// literals and numbers. Unterminated literals and comments end the input
// (the server rejects such SQL anyway). It runs in one pass over the input.
func lexSQL(sql string) []sqlToken {
	var toks []sqlToken
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < n && sql[i+1] == '*':
			depth := 0
			for i < n {
				if sql[i] == '/' && i+1 < n && sql[i+1] == '*' {
					depth++
					i += 2
				} else if sql[i] == '*' && i+1 < n && sql[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
		case c == '\'':
			i = skipQuoted(sql, i+1, '\'', false)
		case (c == 'e' || c == 'E') && i+1 < n && sql[i+1] == '\'':
			i = skipQuoted(sql, i+2, '\'', true)
		case c == '"':
			end := skipQuoted(sql, i+1, '"', false)
			body := sql[i+1 : max(i+1, end-1)]
			toks = append(toks, sqlToken{quoted: strings.ReplaceAll(body, `""`, `"`)})
			i = end
		case c == '$' && i+1 < n && (sql[i+1] == '$' || isIdentStart(sql[i+1])):
			// Dollar quote $tag$...$tag$ (a parameter $1 starts with a digit).
			j := i + 1
			for j < n && isIdentPart(sql[j]) && sql[j] != '$' {
				j++
			}
			if j < n && sql[j] == '$' {
				tag := sql[i : j+1]
				end := strings.Index(sql[j+1:], tag)
				if end < 0 {
					return toks
				}
				i = j + 1 + end + len(tag)
			} else {
				i = j
			}
		case isIdentStart(c):
			j := i + 1
			for j < n && isIdentPart(sql[j]) {
				j++
			}
			toks = append(toks, sqlToken{word: strings.ToLower(sql[i:j])})
			i = j
		case c >= '0' && c <= '9' || c == '$':
			j := i + 1
			for j < n && (isIdentPart(sql[j]) || sql[j] == '.') {
				j++
			}
			i = j
		default:
			toks = append(toks, sqlToken{punct: c})
			i++
		}
	}
	return toks
}

// skipQuoted returns the index just past the closing quote q, starting
// inside the literal at i. A doubled quote is an escaped quote; with
// backslash, \x escapes x (E'...' strings).
func skipQuoted(s string, i int, q byte, backslash bool) int {
	for i < len(s) {
		switch {
		case backslash && s[i] == '\\':
			i += 2
		case s[i] == q:
			if i+1 < len(s) && s[i+1] == q {
				i += 2
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return len(s)
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdentPart(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}
