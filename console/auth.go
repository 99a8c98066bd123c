package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/txcoord/txcoord/security"
)

// Access control, the Admin API's rules applied to browsers:
//
//   - auth configured: the identity is a verified client certificate's
//     (security.Identity), else the one a session cookie is bound to; a
//     session is made by signing in with a bearer token (POST /login). Only
//     a client whose policy has admin: true gets anything but the sign-in
//     page; everything else answers 401 (unknown) or 403 (not admin) with no
//     data, pages, fragments and JSON alike.
//   - no auth, TLS: a verified client certificate is required (as on the
//     gRPC API, where any certificate of the CA may call Admin).
//   - no auth, no TLS: open (the node allows it on loopback only); every
//     page says so.
//
// Every identity gets a session (cookie HttpOnly, SameSite=Strict, Secure
// under TLS) holding its CSRF token; the apply and sign-out forms must carry
// it, and a session is only honoured for the identity it was made for.

// sessionCookie is the session cookie's name; a listening console appends
// its port, since browsers keep cookies per host, not per port, and the
// consoles of several nodes on one host must not replace each other's.
const sessionCookie = "txcoord_console"

// openIdentity names the user of an open console in the audit trail.
const openIdentity = "console (no access control, loopback)"

// session is one signed-in browser.
type session struct {
	id      string
	client  string
	bearer  string // the token it signed in with, to ask other members ("" for certificates)
	csrf    string
	expires time.Time
	made    time.Time
}

// sessions holds the sessions in memory (a restart signs everyone out).
type sessions struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu   sync.Mutex
	byID map[string]*session
}

func newSessions(ttl time.Duration, max int) *sessions {
	return &sessions{ttl: ttl, max: max, now: time.Now, byID: map[string]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("console: no randomness for a session id: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// create makes a session for client, dropping expired ones and, beyond max,
// the oldest.
func (s *sessions) create(client, bearer string) *session {
	now := s.now()
	ss := &session{id: randomToken(), client: client, bearer: bearer, csrf: randomToken(), expires: now.Add(s.ttl), made: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, x := range s.byID {
		if now.After(x.expires) {
			delete(s.byID, id)
		}
	}
	for len(s.byID) >= s.max {
		var oldest *session
		for _, x := range s.byID {
			if oldest == nil || x.made.Before(oldest.made) {
				oldest = x
			}
		}
		delete(s.byID, oldest.id)
	}
	s.byID[ss.id] = ss
	return ss
}

// get returns the live session with id (nil when unknown or expired).
func (s *sessions) get(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.byID[id]
	if ss == nil {
		return nil
	}
	if s.now().After(ss.expires) {
		delete(s.byID, id)
		return nil
	}
	return ss
}

func (s *sessions) drop(id string) {
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
}

// identity is who a request comes from, once access is granted.
type identity struct {
	client  string
	session *session
	open    bool // no access control (loopback)
}

type ctxKey struct{}

func identityFrom(ctx context.Context) identity {
	id, _ := ctx.Value(ctxKey{}).(identity)
	return id
}

// caller is the identity as the services see it (the audit trail's actor).
func (id identity) caller(ctx context.Context) context.Context {
	return security.WithCaller(ctx, security.Caller{Name: id.client})
}

// certIdentity is the verified client certificate's identity, if any.
func certIdentity(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return security.Identity(r.TLS.VerifiedChains[0][0])
	}
	return ""
}

func (s *Server) sessionOf(r *http.Request) *session {
	c, err := r.Cookie(s.cookie)
	if err != nil {
		return nil
	}
	return s.sessions.get(c.Value)
}

func (s *Server) setCookie(w http.ResponseWriter, ss *session) {
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: ss.id, Path: "/", HttpOnly: true, Secure: s.cfg.TLS != nil,
		SameSite: http.SameSiteStrictMode, Expires: ss.expires, MaxAge: int(s.cfg.SessionTTL.Seconds())})
}

// denial is why a request gets no data.
type denial struct {
	status int
	reason string
	login  bool // offer the sign-in form
}

// authenticate finds the request's identity, or why it has none.
func (s *Server) authenticate(r *http.Request) (string, *session, *denial) {
	cert := certIdentity(r)
	ss := s.sessionOf(r)
	if s.cfg.Policy == nil {
		switch {
		case s.cfg.TLS == nil:
			return openIdentity, ss, nil
		case cert == "":
			return "", nil, &denial{http.StatusUnauthorized, "present a client certificate signed by the cluster CA (no auth is configured, so a certificate is the only way in)", false}
		}
		return cert, ss, nil
	}
	name := cert
	if name == "" && ss != nil {
		name = ss.client
	}
	if name == "" {
		return "", nil, &denial{http.StatusUnauthorized, "sign in with a token of a client that has admin: true, or present a client certificate signed by the cluster CA", true}
	}
	c, ok := s.policy().Client(name)
	switch {
	case !ok:
		return "", nil, &denial{http.StatusForbidden, fmt.Sprintf("client %q has no access (not in auth.clients)", name), true}
	case !c.Admin:
		return "", nil, &denial{http.StatusForbidden, fmt.Sprintf("client %q may not use the console: it needs the Admin service (auth.clients[].admin: true)", name), true}
	}
	return name, ss, nil
}

// guard runs next only for an authorized identity, with a session bound to
// it; otherwise it answers 401/403 without data.
func (s *Server) guard(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, ss, d := s.authenticate(r)
		if d != nil {
			if s.cfg.OnDenied != nil && (d.status == http.StatusForbidden || r.Method == http.MethodPost) {
				s.cfg.OnDenied(name, "console "+r.Method+" "+r.URL.Path, d.reason)
			}
			s.deny(w, r, d)
			return
		}
		if ss == nil || ss.client != name {
			ss = s.sessions.create(name, "")
			s.setCookie(w, ss)
		}
		id := identity{client: name, session: ss, open: s.cfg.Policy == nil && s.cfg.TLS == nil}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	}
}

// deny answers without data: JSON for /api/, text for /fragment/, the
// sign-in page (or an error page) otherwise.
func (s *Server) deny(w http.ResponseWriter, r *http.Request, d *denial) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/api/"):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(d.status)
		fmt.Fprintf(w, "{\"error\":%q}\n", d.reason)
	case strings.HasPrefix(r.URL.Path, "/fragment/"):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(d.status)
		fmt.Fprintln(w, d.reason)
	default:
		next := ""
		if r.Method == http.MethodGet {
			next = r.URL.RequestURI()
		}
		s.render(w, r, d.status, "login", view{Title: "Sign in", Data: loginData{Reason: d.reason, Next: next, Form: d.login}})
	}
}

// Sign-in attempts are bounded over all clients, loginRate per second with
// bursts of loginBurst: a token guesser gets 429s (and each refusal is also
// reported to OnDenied).
const (
	loginRate  = 2
	loginBurst = 5
)

type loginData struct {
	Reason string
	Next   string
	Form   bool
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Policy == nil {
		http.Redirect(w, r, "/cluster", http.StatusSeeOther)
		return
	}
	if name, _, d := s.authenticate(r); d == nil && name != "" {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "login", view{Title: "Sign in", Data: loginData{Next: r.URL.Query().Get("next"), Form: true}})
}

// safeNext keeps a redirect target on this console.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.IsAbs() || u.Host != "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/cluster"
	}
	return next
}

// sameOrigin rejects cross-site form posts that carry an Origin header
// naming another site (SameSite=Strict cookies and CSRF tokens do the rest).
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" && r.Header.Get("Sec-Fetch-Site") == "same-origin" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Policy == nil {
		http.Redirect(w, r, "/cluster", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil || !sameOrigin(r) {
		s.render(w, r, http.StatusBadRequest, "login", view{Title: "Sign in", Data: loginData{Reason: "the sign-in form could not be read; load the page again", Form: true}})
		return
	}
	next := r.PostForm.Get("next")
	fail := func(status int, identity, reason string) {
		if s.cfg.OnDenied != nil {
			s.cfg.OnDenied(identity, "console POST /login", reason)
		}
		s.render(w, r, status, "login", view{Title: "Sign in", Data: loginData{Reason: reason, Next: next, Form: true}})
	}
	if !s.logins.Allow() {
		fail(http.StatusTooManyRequests, "", "too many sign-in attempts; wait a few seconds")
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	name, ok := s.policy().ClientForToken(token)
	if token == "" || !ok {
		fail(http.StatusUnauthorized, "", "unknown token: give a token from auth.tokens_file of a client with admin: true")
		return
	}
	c, ok := s.policy().Client(name)
	if !ok || !c.Admin {
		fail(http.StatusForbidden, name, fmt.Sprintf("client %q may not use the console: it needs the Admin service (auth.clients[].admin: true)", name))
		return
	}
	if old := s.sessionOf(r); old != nil {
		s.sessions.drop(old.id) // a fresh id at every sign-in
	}
	ss := s.sessions.create(name, token)
	s.setCookie(w, ss)
	s.log.Info("console sign-in", "client", name, "remote", r.RemoteAddr)
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	id := identityFrom(r.Context())
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil || !sameOrigin(r) || !validCSRF(id, r.PostForm.Get("csrf")) {
		s.renderError(w, r, http.StatusForbidden, "the sign-out form is stale: load the page again")
		return
	}
	s.sessions.drop(id.session.id)
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// validCSRF compares a posted CSRF token with the session's in constant time.
func validCSRF(id identity, posted string) bool {
	return id.session != nil && posted != "" && subtle.ConstantTimeCompare([]byte(posted), []byte(id.session.csrf)) == 1
}

// policy is the access control in force (see Config.CurrentPolicy); only
// called when Config.Policy is set.
func (s *Server) policy() *security.Policy {
	if s.cfg.CurrentPolicy != nil {
		if p := s.cfg.CurrentPolicy(); p != nil {
			return p
		}
	}
	return s.cfg.Policy
}
