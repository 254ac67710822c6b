package agentsrv

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/internal/peer"
)

// connInfo is who is at the other end of a connection and where it says
// it is going. It is immutable: a session-bind replaces the connection's
// pointer with a new one, so that the sign path and status read it
// without locks or allocation.
type connInfo struct {
	peer Peer
	dest Destination
}

// unknownPeer is the connInfo of connections that are not unix sockets.
var unknownPeer = &connInfo{}

// connInfo returns the connection's peer and destination.
func (c *conn) connInfo() *connInfo {
	if i := c.info.Load(); i != nil {
		return i
	}
	return unknownPeer
}

// lookupPeer describes the process that connected with cred, from /proc.
func lookupPeer(uid, pid int) Peer {
	in := peer.Lookup(uid, pid)
	return Peer{Known: true, UID: in.UID, PID: in.PID, Exe: in.Exe, Cmdline: in.Cmdline}
}

// destination returns where the connection's client authenticates, from
// its last session binding.
func (c *conn) destination() Destination { return c.connInfo().dest }

// setDestination records the destination of a new session binding.
func (c *conn) setDestination(hostKey ssh.PublicKey, forwarding bool) Destination {
	old := c.connInfo()
	d := Destination{HostKey: ssh.FingerprintSHA256(hostKey), Forwarding: forwarding}
	if c.s.knownHost != nil {
		d.Host = c.s.knownHost(hostKey, old.peer)
	}
	c.info.Store(&connInfo{peer: old.peer, dest: d})
	return d
}

// lastUse is the last signature made with a sealed identity, for status.
type lastUse struct {
	info *connInfo
	at   atomic.Int64 // unix nanoseconds
}

// noteUse records a signature by e for status. It allocates nothing
// when the same connection signs again.
func (e *sealed) noteUse(info *connInfo, now time.Time) {
	lu := e.last.Load()
	if lu == nil || lu.info != info {
		lu = &lastUse{info: info}
		e.last.Store(lu)
	}
	lu.at.Store(now.UnixNano())
}

// maxKnownHosts bounds how much of a known_hosts file is read.
const maxKnownHosts = 8 << 20

// KnownHostsLookup returns a Config.KnownHost that looks host keys up in
// the known_hosts files at paths (typically ~/.ssh/known_hosts). A
// plain entry gives its first host name; a hashed entry (|1|salt|hash,
// HashKnownHosts yes) hides its name, and is matched by trying the words
// of the peer's command line (ssh's arguments: host, user@host) as
// candidate names, as OpenSSH does with the name it connects to. Files
// that are missing or unreadable are skipped.
func KnownHostsLookup(paths ...string) func(key ssh.PublicKey, p Peer) string {
	return func(key ssh.PublicKey, p Peer) string {
		want := key.Marshal()
		candidates := hostCandidates(p.Cmdline)
		for _, path := range paths {
			if name := lookupKnownHosts(path, want, candidates); name != "" {
				return name
			}
		}
		return ""
	}
}

// hostCandidates returns the words of a command line that may name a
// host: every argument not starting with "-", with any user@ removed,
// and each also as "[host]:PORT" for the port of a "-p PORT" or
// "-oPort=PORT" (how known_hosts names a host on another port).
func hostCandidates(cmdline string) []string {
	words := strings.Fields(cmdline)
	var hosts, ports []string
	for i, w := range words {
		switch {
		case i == 0:
		case w == "-p" && i+1 < len(words):
			ports = append(ports, words[i+1])
		case strings.HasPrefix(w, "-oPort="):
			ports = append(ports, strings.TrimPrefix(w, "-oPort="))
		case strings.HasPrefix(w, "-"):
		default:
			if at := strings.LastIndexByte(w, '@'); at >= 0 {
				w = w[at+1:]
			}
			if w != "" {
				hosts = append(hosts, w)
			}
		}
	}
	out := hosts
	for _, p := range ports {
		for _, h := range hosts {
			out = append(out, "["+h+"]:"+p)
		}
	}
	return out
}

func lookupKnownHosts(path string, want []byte, candidates []string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxKnownHosts))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		_, hosts, pub, _, _, err := ssh.ParseKnownHosts(line)
		if err != nil || pub == nil || !bytes.Equal(pub.Marshal(), want) {
			continue
		}
		for _, h := range hosts {
			if name := matchHost(h, candidates); name != "" {
				return name
			}
		}
	}
	return ""
}

// matchHost returns the host name an entry's host pattern names: the
// pattern itself for a plain name, the matching candidate for a hashed
// one, "" for a negation or a wildcard.
func matchHost(h string, candidates []string) string {
	if salt, hash, ok := parseHashed(h); ok {
		for _, c := range candidates {
			m := hmac.New(sha1.New, salt)
			m.Write([]byte(c))
			if hmac.Equal(m.Sum(nil), hash) {
				return c
			}
		}
		return ""
	}
	if h == "" || h[0] == '!' || strings.ContainsAny(h, "*?") {
		return ""
	}
	return h
}

// parseHashed splits a hashed known_hosts name, |1|base64(salt)|base64(hash).
func parseHashed(h string) (salt, hash []byte, ok bool) {
	rest, found := strings.CutPrefix(h, "|1|")
	if !found {
		return nil, nil, false
	}
	s, hs, found := strings.Cut(rest, "|")
	if !found {
		return nil, nil, false
	}
	salt, err1 := base64.StdEncoding.DecodeString(s)
	hash, err2 := base64.StdEncoding.DecodeString(hs)
	if err1 != nil || err2 != nil || len(hash) != sha1.Size {
		return nil, nil, false
	}
	return salt, hash, true
}
