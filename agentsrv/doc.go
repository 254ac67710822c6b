// Package agentsrv is icn-agent's ssh-agent: it serves Ed25519 identities
// whose seeds are sealed by a TPM 2.0, next to ordinary keys added with
// ssh-add, over the standard agent protocol.
//
// # How a signature is made
//
// The daemon scans its store of sealed blobs and hands them to
// [Server.SetIdentities]. Listing needs nothing but the blobs' public keys.
// The first signature with an identity unseals its 32-byte seed through
// the [Unsealer] (the TPM), into a locked secmem buffer laid out as an
// ed25519.PrivateKey (seed || public key), after checking that the seed's
// public key is the blob's. Later signatures use the cached seed: no TPM
// command, no allocation beyond the signature. Concurrent first signatures
// of one identity share a single Unseal; a failed Unseal is not
// remembered, so the next request tries the TPM again.
//
// The cached seed is zeroized:
//
//   - Config.AutoLockTimeout after it was unsealed (a timer; each use also
//     checks the wall-clock deadline, and Serve sweeps every 10 s so that
//     time spent suspended counts);
//   - when a client locks the agent (ssh-add -x) or removes the identity
//     (ssh-add -d, ssh-add -D);
//   - on [Server.DropAll] (SIGUSR1 in the daemon), [Server.Close], or when
//     Serve returns;
//   - when SetIdentities removes the identity or brings a different blob
//     for it.
//
// Signatures are computed in software by internal/edlocked rather than
// by crypto/ed25519, which aborts the process when handed a key stored
// outside the Go heap, and which would otherwise keep a derived copy of
// the key in a heap cache. Unseal goroutines run inside edlocked.Deep,
// so that the runtime never moves their stacks while a seed is on them.
//
// # Protocol behaviour
//
// List returns the sealed identities sorted by name, each followed by its
// certificate if [Identity].Cert is set, with the blob's comment (its
// name when the comment is empty), then the software keys in the order
// they were added.
//
// Add accepts ssh-ed25519, ssh-rsa and ecdsa-sha2-nistp256/384/521 keys
// and their OpenSSH certificates, as x/crypto's agent does, with a
// lifetime (the key is deleted when it ends) and, if Config.AskPass is
// set, the confirm constraint (the program is run before each signature
// and must exit 0). Constraint extensions, such as OpenSSH's destination
// restrictions, are refused because they cannot be honoured; so is a key
// equal to a sealed identity's, and an Ed25519 key whose public half is
// not the public key of its seed ([ErrKeyMismatch]). An added Ed25519 key
// is copied from the request straight into a locked buffer and signs
// with internal/edlocked, like a sealed seed; RSA and ECDSA keys are held
// by x/crypto signers in the Go heap (see Secrets in memory).
//
// Remove and RemoveAll delete software keys. For sealed identities they
// zeroize the seed and hide the identity from List and Sign until
// [Server.Restore], the unseal@icn-agent extension, a changed blob, or a
// restart. Nothing on disk is touched.
//
// Lock keeps only a salted Argon2id hash of the passphrase, in locked
// memory, and zeroizes every cached seed; software keys stay, as in
// OpenSSH. While locked, List is empty and everything else
// fails except Unlock and the query and status@icn-agent extensions. A
// wrong Unlock passphrase costs 100 ms per consecutive failure (at most
// 10 s) before the error, as in OpenSSH.
//
// If Config.Metrics is set, every unseal, signature (made or failed) and
// PCR change is reported to it; the daemon exports them to Prometheus.
//
// # Connections
//
// Each connection is served by this package's request loop (conn.go), on
// its own goroutine, run inside edlocked.Deep. On a unix socket, the
// peer's uid (SO_PEERCRED) must first be allowed by Config.AllowUID (by
// default the agent's own uid and root). A request longer than
// Config.MaxMessage (256 KiB by default, at most 1 MiB) closes that
// connection before its body is read; so does a zero-length one.
// Requests are answered in order, and a client may send several before
// reading the replies. Replies are those of OpenSSH's agent: unknown
// requests, including the SSH protocol 1 ones, get SSH_AGENT_FAILURE.
//
// Config.MaxConns caps the connections held at once (256 by default,
// lowered to leave 32 descriptors of RLIMIT_NOFILE to the rest of the
// daemon). A new connection over the cap closes the one idle the longest
// (waiting between requests); connections in the middle of a request are
// never closed for room, and if all are, the new one is refused. A
// connection that starts a request must complete it within
// Config.RequestTimeout (10 s by default). If Accept runs out of
// descriptors anyway, the longest idle connection is closed, or if none
// is idle the pending connection is refused with a spare descriptor kept
// for the purpose. A flood of idle connections therefore cannot lock the
// owner out. Closed and refused connections are logged once per burst.
// Each connection holds a 4 KiB locked request buffer and, because its
// goroutine runs inside edlocked.Deep, a 128 KiB stack that is never
// shrunk: 33 MiB at the default cap.
//
// # Secrets in memory
//
// Each connection reads its requests into a buffer of locked memory
// (internal/secmem: mlock'ed, left out of core dumps and forks) that it
// owns and reuses, and parses them in place: a lock passphrase, an
// unlock guess, an added private key or an extension's contents are not
// copied into the Go heap on their way in. Each request is wiped once
// answered; a buffer grown for a large request is destroyed (wiped and
// unmapped) when the request is done, and the buffer when the connection
// ends. If RLIMIT_MEMLOCK refuses the lock, the buffers work unlocked and
// the server warns once.
//
// The lock passphrase is copied from the request into a second locked
// buffer laid out so that BLAKE2b, in Argon2's first hash, compresses the
// passphrase in place and never copies it into its heap block buffer (see
// lock.go); the stack is scrubbed afterwards. The lock hash is kept in
// locked memory and destroyed on unlock; every guess and its hash are
// wiped.
//
// What cannot be wiped, because the Go standard library or x/crypto
// keeps it in heap memory this package cannot reach (the garbage
// collector frees it without clearing it; the memory is reused, at some
// later time, by other allocations):
//
//   - Software RSA keys: the big.Int words of D, the primes and the CRT
//     values are wiped when the key is removed, but crypto/rsa's
//     Precompute also builds an unexported FIPS key (bigmod copies of d,
//     p, q, dP, dQ and qInv), and each signature leaves bigmod
//     intermediates of the CRT exponentiation in the heap.
//   - Software ECDSA keys: D's words are wiped on removal, but
//     crypto/ecdsa caches a FIPS copy of the private scalar per key (a
//     cache keyed by a weak pointer, dropped unwiped when the key is
//     collected), and each signature leaves its HMAC-DRBG state, seeded
//     with the scalar, and its nonce, from which the scalar follows, in
//     the heap.
//   - The lock passphrase: Argon2's 19 MiB work area and BLAKE2b's
//     chaining state after the passphrase blocks are derived from the
//     passphrase. They do not contain it, but someone who reads them can
//     test guesses at the cost of a BLAKE2b hash rather than of Argon2id.
//     Argon2's worker goroutines' stacks hold work-area blocks likewise.
//   - Anything in transit in the kernel: socket buffers, and the
//     registers the kernel saves when a signal interrupts the work.
//
// Sealed seeds are covered in docs/security.md (the TPM library's unseal
// path leaves copies of its own).
//
// # Extensions
//
// Agent protocol extensions (SSH_AGENTC_EXTENSION, message 27) carry a
// name and content. Replies with content begin with SSH_AGENT_SUCCESS (6).
// A failed extension gets SSH_AGENT_EXTENSION_FAILURE (28); an unknown one
// gets SSH_AGENT_FAILURE (5). Types below are those of RFC 4251: string is
// a uint32 length and that many bytes, bool one byte, integers big-endian.
// The Go structs in extension.go encode them with ssh.Marshal.
//
// query: the standard request for the supported extensions. The content
// is empty; the reply is
//
//	byte    SSH_AGENT_SUCCESS
//	string  extension name, repeated to the end of the message:
//	        "query", "unseal@icn-agent", "status@icn-agent",
//	        "session-bind@openssh.com", "quote@icn-agent",
//	        and "metrics@icn-agent" if the agent keeps metrics
//
// quote@icn-agent: attestation evidence about one identity, bound to the
// verifier's nonce (see package attest for the request, the reply and how
// to verify it offline). The identity's proof of possession is a signature
// like any other: it unseals if needed and fails while the agent is
// locked.
//
// unseal@icn-agent: unseal an identity now, list it again if ssh-add -d
// hid it, and keep its seed for a lifetime. Content:
//
//	string  identity name
//	uint32  lifetime in seconds; 0 for Config.AutoLockTimeout
//
// If the seed is already cached, only its expiry is reset. The reply is
// SSH_AGENT_SUCCESS alone, or SSH_AGENT_EXTENSION_FAILURE (locked, unknown
// name, TPM error: the status extension then tells the error).
//
// status@icn-agent, version 2: the agent's state. Content empty; reply:
//
//	byte    SSH_AGENT_SUCCESS
//	uint32  version, 2
//	bool    locked
//	uint32  number of software keys
//	uint32  number of identities, N
//	string  identity record, N times
//	bool    TPM dictionary-attack state known
//	uint32  failed authorizations counted (wrong PINs)
//	uint32  threshold at which PIN identities are locked out
//
// (Version 1 ended after the records; clients read both.)
//
// each identity record being
//
//	string  name
//	string  public key, SSH wire format (ssh-ed25519)
//	string  certificate, SSH wire format; empty if none
//	string  fingerprint, "SHA256:..."
//	bool    hardware-backed (sealed by a TPM)
//	bool    unsealed (seed cached)
//	uint64  expiry of the cached seed, Unix seconds; 0 for none
//	uint64  number of successful unseals
//	bool    hidden by ssh-add -d
//	string  error of the last failed unseal; empty after a success
//	string  PCRs that no longer hold their sealing-time values, one byte
//	        per PCR index; empty if none or not known
//
// Later versions of a record may append fields, which readers ignore; an
// incompatible change bumps the version. While the agent is locked the
// reply says locked, lists nothing, and leaves the dictionary-attack state
// unknown.
//
// metrics@icn-agent: the agent's counters (Config.Metrics), for icn-agent
// status --json. Content empty; reply:
//
//	byte    SSH_AGENT_SUCCESS
//	string  a JSON object: each metric by its Prometheus name, a number
//	        for an unlabelled counter or gauge, else an object from
//	        label set ("name=value,...") to number; a histogram gives
//	        {"count": N, "sum": S}
//
// An agent without metrics answers SSH_AGENT_FAILURE, as for any unknown
// extension; a locked one SSH_AGENT_EXTENSION_FAILURE. Served through a
// separate extension rather than appended to the status reply, whose
// version-1 readers reject trailing data.
//
// session-bind@openssh.com: OpenSSH's binding of an agent connection to
// an SSH session (see OpenSSH's PROTOCOL.agent). Content:
//
//	string  host key, SSH wire format
//	string  session identifier
//	string  signature of the session identifier by the host key
//	bool    is forwarding
//
// The signature must verify; the binding is then remembered for the
// connection (at most 16, none after a binding for authentication, one
// host key per session identifier) and the reply is SSH_AGENT_SUCCESS.
// Nothing is restricted by the bindings yet: keys with destination
// constraints (ssh-add -h) are refused rather than added unconstrained.
//
// # Client side
//
// [Dial] returns a [Client] for tools: [Client.List] marks each key with
// its backend ("tpm" or "software", from the status extension) and its
// did:key; [Client.Add] is the unseal extension.
//
// # Sockets
//
// [Listen] creates a private socket (0600 in a 0700 directory) and
// refuses to take over one an agent still answers on;
// [ListenersFromSystemd] takes the sockets of systemd socket activation.
package agentsrv
