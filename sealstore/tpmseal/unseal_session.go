package tpmseal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/edlocked"
	"github.com/icn/icn-agent/internal/seccrypt"
	"github.com/icn/icn-agent/internal/secmem"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

// The unseal session, by hand.
//
// go-tpm's sessions and its command execution work on ordinary heap
// buffers: the decrypted TPM2_Unseal response (the seed) passes through
// three of them, and the HMAC and parameter-encryption keys, which hold the
// PIN's authValue, through several more (hmacKey and sessionValue are built
// with append), none of which a caller can reach to wipe. So UnsealWith runs
// its policy session itself, using go-tpm only for commands that carry no
// secret (Load, StartAuthSession, the policy commands, FlushContext):
//
//   - The session is salted to the SRK (the salt is encrypted to it) and
//     asks for AES-128-CFB encryption of the response's first parameter,
//     so the seed crosses the bus encrypted, as it did with go-tpm.
//   - Its session key, the PIN's authValue, every HMAC and KDFa input and
//     output, the CFB key, IV and key stream live in one locked page
//     (secmem) that is wiped when the session ends. HMAC-SHA256 is computed
//     as two sha256.Sum256 calls over that page, so no hash state holding
//     key material is left on the heap (Sum256 keeps its state on the
//     stack, which edlocked.Scrub clears).
//   - The TPM2_Unseal command is marshalled here; its response is checked
//     (header, size, response HMAC) and its encrypted outData is copied to
//     the caller's locked dst, decrypted in place there, and the response
//     buffer is wiped. The plaintext seed is never in Go heap memory.
//   - The AES key schedule that crypto/aes puts on the heap is zeroed after
//     use (see wipeBlock).
//
// UnsealDuplicate unseals an imported migration object in the same
// session (unsealInSession), with its own policy, PolicyCommandCode(Unseal).
//
// Sealing runs TPM2_Create the same way, in an HMAC session started by
// startSession and kept in the same kind of locked page, with the sensitive
// data encrypted there (seal_session.go).
//
// What remains on the heap: what go-tpm's Encapsulate computes for the
// salt of StartAuthSession (the ephemeral ECDH key, the shared secret, the
// salt itself before sealstore wipes the copy it is handed). These are
// session secrets: together with a recording of this session's bus
// traffic they would decrypt this one response (or, for TPM2_Create, the
// command's sensitive data); without one they reveal nothing. And the
// nonces, which are public. See docs/security.md.

// sessionNonceSize is the size of the caller's nonces.
const sessionNonceSize = 16

// attrEncrypt is TPMA_SESSION encrypt: the TPM encrypts the first
// response parameter. continueSession is clear: the TPM flushes the
// session once it has authorized a command.
const attrEncrypt = 1 << 6

// Layout of the locked page a session keeps its secrets in.
const (
	offSessionKey = 0   // 32 bytes: KDFa(salt, "ATH", nonceTPM, nonceCaller)
	offAuthValue  = 32  // 32 bytes: the PIN's authValue (PIN blobs only)
	offCFB        = 64  // 32 bytes: AES-128 key || IV for the response (or command)
	offBlock      = 96  // 32 bytes: CFB feedback and key stream blocks
	offInner      = 128 // 32 bytes: inner HMAC digest
	offSensitive  = 160 // up to 70 bytes: TPM2_Create's TPM2B_SENSITIVE_CREATE
	offScratch    = 256 // HMAC input: a key pad block and the message
	sessionPage   = 4096
)

// errResponseHMAC means the response to TPM2_Unseal or TPM2_Create did
// not carry the HMAC the session key gives: it did not come from the TPM
// the session was started with, or it was altered on the way.
var errResponseHMAC = errors.New("the TPM's response failed its HMAC check")

// unsealSession is a salted session started by startSession: a policy
// session for TPM2_Unseal (unseal), or an HMAC session for TPM2_Create
// (createSealedLocked, seal_session.go).
type unsealSession struct {
	handle      tpm2.TPMHandle
	nonceCaller [sessionNonceSize]byte
	nonceTPM    []byte
	sec         *secmem.Buffer // see the layout above
	hmacKeyLen  int            // 32, or 64 with the PIN's authValue
	flushed     bool           // the TPM has flushed the session
}

// startSession starts a session of type typ (TPM_SE_POLICY for an unseal,
// TPM_SE_HMAC for a TPM2_Create) salted to the SRK, with AES-128-CFB
// parameter encryption and SHA-256. For the policy session of a PIN blob,
// pin is the PIN (nil otherwise): its authValue (PINAuthValue) is computed
// straight into the session's locked page and keys the session's HMAC.
// The caller runs its commands in s.handle and calls s.close on every path.
func startSession(tpm transport.TPM, srk *tpmdev.SRK, typ tpm2.TPMSE, pin []byte) (_ *unsealSession, err error) {
	sec, err := secmem.New(sessionPage)
	if err != nil {
		return nil, err
	}
	s := &unsealSession{sec: sec, hmacKeyLen: sha256.Size}
	defer func() {
		if err != nil {
			s.close(tpm)
		}
	}()
	if len(pin) > 0 {
		s.hmacKeyLen += sha256.Size
		edlocked.Deep(func() {
			pinAuthValue((*[sha256.Size]byte)(sec.Bytes()[offAuthValue:offAuthValue+sha256.Size]), pin)
		})
	}
	if _, err := rand.Read(s.nonceCaller[:]); err != nil {
		return nil, fmt.Errorf("session nonce: %w", err)
	}

	key, err := tpm2.ImportEncapsulationKey(&srk.Public)
	if err != nil {
		return nil, fmt.Errorf("salt key: %w", err)
	}
	salt, encSalt, err := tpm2.CreateEncryptedSalt(rand.Reader, key)
	if err != nil {
		return nil, fmt.Errorf("session salt: %w", err)
	}
	defer secmem.Wipe(salt)
	rsp, err := tpm2.StartAuthSession{
		TPMKey:        srk.Handle,
		Bind:          tpm2.TPMRHNull,
		NonceCaller:   tpm2.TPM2BNonce{Buffer: s.nonceCaller[:]},
		EncryptedSalt: tpm2.TPM2BEncryptedSecret{Buffer: encSalt},
		SessionType:   typ,
		Symmetric: tpm2.TPMTSymDef{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
		AuthHash: tpm2.TPMAlgSHA256,
	}.Execute(tpm)
	if err != nil {
		s.flushed = true // there is no session to flush
		return nil, fmt.Errorf("start %s session: %w", sessionTypeName(typ), err)
	}
	s.handle = tpm2.TPMHandle(rsp.SessionHandle)
	s.nonceTPM = bytes.Clone(rsp.NonceTPM.Buffer)
	// The reference implementation makes nonceTPM the size of nonceCaller;
	// a nonce is at least 16 bytes and at most a digest (Part 1, 19.6.2).
	if len(s.nonceTPM) < 16 || len(s.nonceTPM) > 64 {
		return nil, fmt.Errorf("the TPM's session nonce is %d bytes", len(s.nonceTPM))
	}
	// Part 1, 19.6.8: sessionKey = KDFa(authHash, bind authValue || salt,
	// "ATH", nonceTPM, nonceCaller, digest size). The session is unbound.
	edlocked.Deep(func() {
		s.kdfa(s.sec.Bytes()[offSessionKey:offSessionKey+sha256.Size], salt, "ATH", s.nonceTPM, s.nonceCaller[:])
	})
	return s, nil
}

// sessionTypeName names a session type in errors.
func sessionTypeName(typ tpm2.TPMSE) string {
	if typ == tpm2.TPMSEHMAC {
		return "HMAC"
	}
	return "policy"
}

// key returns the HMAC key of the session's commands and responses:
// sessionKey, followed by the PIN's authValue for a PIN blob (the policy
// ran TPM2_PolicyAuthValue, so the TPM includes the object's authValue;
// the SRK, TPM2_Create's parent, has an empty one). It is also the session
// value the parameter encryption keys are derived from (Part 1, 21.2).
func (s *unsealSession) key() []byte {
	return s.sec.Bytes()[offSessionKey : offSessionKey+s.hmacKeyLen]
}

// close flushes the session unless the TPM has, and wipes its secrets.
func (s *unsealSession) close(tpm transport.TPM) {
	if !s.flushed {
		// The error is not reported: the TPM may have flushed the
		// session already (a command that failed after the TPM had
		// authorized it), and tpmdev flushes leftovers after a lost
		// response.
		tpm2.FlushContext{FlushHandle: s.handle}.Execute(tpm)
		s.flushed = true
	}
	s.sec.Destroy()
}

// unseal runs TPM2_Unseal on the loaded sealed object (handle, name) in
// the session, whose policy the caller has run, and writes the sealed data
// to dst (locked memory, exactly as long as the data: SeedSize bytes for a
// seed, up to MaxDuplicateData for a wrapped object). On failure dst is
// zeroed. A TPM error is returned as the tpm2.TPMRC go-tpm would return,
// so errors.Is with tpm2.TPMRCPolicyFail and the like works as with
// go-tpm's Unseal.
func (s *unsealSession) unseal(tpm transport.TPM, handle tpm2.TPMHandle, name tpm2.TPM2BName, dst []byte) (err error) {
	if len(dst) == 0 || len(dst) > sealstore.MaxDuplicateData {
		return fmt.Errorf("unseal buffer is %d bytes, want 1 to %d", len(dst), sealstore.MaxDuplicateData)
	}
	defer func() {
		if err != nil {
			secmem.Wipe(dst)
		}
	}()
	cmd, err := s.unsealCommand(handle, name)
	if err != nil {
		return err
	}
	rsp, err := tpm.Send(cmd)
	// The response's outData is the seed, encrypted; once it is copied
	// into dst and decrypted there, nothing of it is left elsewhere.
	defer secmem.Wipe(rsp)
	if err != nil {
		return err
	}
	var runErr error
	edlocked.Deep(func() { runErr = s.finishUnseal(rsp, name, dst) })
	return runErr
}

// unsealCommand marshals TPM2_Unseal (Part 3, 12.7) with one authorization:
// this session, its HMAC over cpHash = SHA-256(commandCode || name).
func (s *unsealSession) unsealCommand(handle tpm2.TPMHandle, name tpm2.TPM2BName) ([]byte, error) {
	var cc [4]byte
	binary.BigEndian.PutUint32(cc[:], uint32(tpm2.TPMCCUnseal))
	h := sha256.New()
	h.Write(cc[:])
	h.Write(name.Buffer)
	cpHash := h.Sum(nil)

	var mac [sha256.Size]byte
	var hmacErr error
	edlocked.Deep(func() {
		// HMAC(key, cpHash || nonceCaller || nonceTPM || attributes),
		// Part 1, 19.6.5.
		hmacErr = s.hmac(mac[:], cpHash, s.nonceCaller[:], s.nonceTPM, []byte{attrEncrypt})
	})
	if hmacErr != nil {
		return nil, hmacErr
	}

	// Header (tag, size, code), handle, then the authorization area: its
	// size and one TPMS_AUTH_COMMAND. TPM2_Unseal has no parameters.
	var auth []byte
	auth = binary.BigEndian.AppendUint32(auth, uint32(s.handle))
	auth = binary.BigEndian.AppendUint16(auth, sessionNonceSize)
	auth = append(auth, s.nonceCaller[:]...)
	auth = append(auth, attrEncrypt)
	auth = binary.BigEndian.AppendUint16(auth, sha256.Size)
	auth = append(auth, mac[:]...)
	cmd := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(10+4+4+len(auth)))
	cmd = append(cmd, cc[:]...)
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(handle))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(len(auth)))
	cmd = append(cmd, auth...)
	return cmd, nil
}

// finishUnseal parses the response to TPM2_Unseal, checks its HMAC, and
// decrypts its outData into dst. It runs inside edlocked.Deep: the HMAC and
// AES work leave key material in stack frames that are scrubbed.
func (s *unsealSession) finishUnseal(rsp []byte, name tpm2.TPM2BName, dst []byte) error {
	params, nonce, attrs, err := s.checkResponse(rsp, tpm2.TPMCCUnseal, "TPM2_Unseal")
	if err != nil {
		return err
	}
	// The parameters: outData, a TPM2B whose buffer is encrypted.
	if len(params) < 2 || int(binary.BigEndian.Uint16(params))+2 != len(params) {
		return fmt.Errorf("%w: outData does not fill its %d bytes of parameters", tpmdev.ErrMalformedResponse, len(params))
	}
	outData := params[2:]
	if len(outData) != len(dst) {
		return fmt.Errorf("sealed object holds %d bytes, want %d", len(outData), len(dst))
	}
	if attrs&attrEncrypt == 0 {
		return errors.New("the TPM did not encrypt the response")
	}

	// Decrypt in place, in dst: AES-128-CFB with key || IV = KDFa(key,
	// "CFB", nonceTPM (the response's), nonceCaller, 256) (Part 1, 21.2).
	copy(dst, outData)
	cfb := s.sec.Bytes()[offCFB : offCFB+32]
	s.kdfa(cfb, s.key(), "CFB", nonce, s.nonceCaller[:])
	return s.cfbDecrypt(dst, cfb[:16], cfb[16:])
}

// checkResponse checks the response to command cc (named what) sent in
// this session: its framing and code, then the response HMAC over its
// parameters (Part 1, 19.6.5: rpHash = SHA-256(responseCode ||
// commandCode || parameters), keyed as the command's, with the nonces in
// the response's order). It returns the parameters as sent (encrypted,
// if they are), the TPM's new nonce and the session attributes. A TPM
// error is returned as the tpm2.TPMRC go-tpm would return; the session
// was not used then, and close flushes it. It runs inside edlocked.Deep,
// for the HMAC.
func (s *unsealSession) checkResponse(rsp []byte, cc tpm2.TPMCC, what string) (params, nonce []byte, attrs byte, err error) {
	if len(rsp) < 10 {
		return nil, nil, 0, fmt.Errorf("%w: response to %s is %d bytes", tpmdev.ErrMalformedResponse, what, len(rsp))
	}
	tag := tpm2.TPMST(binary.BigEndian.Uint16(rsp[0:]))
	size := binary.BigEndian.Uint32(rsp[2:])
	rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:]))
	if uint64(size) != uint64(len(rsp)) {
		return nil, nil, 0, fmt.Errorf("%w: response to %s is %d bytes, its header says %d", tpmdev.ErrMalformedResponse, what, len(rsp), size)
	}
	if rc != tpm2.TPMRCSuccess {
		// The TPM refused (a PCR or PIN mismatch, a lockout...).
		return nil, nil, 0, rc
	}
	// The TPM authorized the command, so it has flushed the session
	// (continueSession is clear), whatever the rest of the response says.
	s.flushed = true
	if tag != tpm2.TPMSTSessions {
		return nil, nil, 0, fmt.Errorf("%w: response to %s has tag %#x, want TPM_ST_SESSIONS", tpmdev.ErrMalformedResponse, what, uint16(tag))
	}
	// parameterSize, the parameters, then one TPMS_AUTH_RESPONSE
	// (nonceTPM, attributes, HMAC).
	r := rsp[10:]
	if len(r) < 4 {
		return nil, nil, 0, fmt.Errorf("%w: no parameter size", tpmdev.ErrMalformedResponse)
	}
	paramSize := binary.BigEndian.Uint32(r)
	r = r[4:]
	if uint64(paramSize) > uint64(len(r)) {
		return nil, nil, 0, fmt.Errorf("%w: parameter size %d", tpmdev.ErrMalformedResponse, paramSize)
	}
	params, r = r[:paramSize], r[paramSize:]
	nonce, r, ok := cutTPM2B(r)
	if !ok || len(r) < 1 {
		return nil, nil, 0, fmt.Errorf("%w: no response nonce", tpmdev.ErrMalformedResponse)
	}
	attrs = r[0]
	mac, r, ok := cutTPM2B(r[1:])
	if !ok || len(r) != 0 {
		return nil, nil, 0, fmt.Errorf("%w: authorization area", tpmdev.ErrMalformedResponse)
	}
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[0:], uint32(tpm2.TPMRCSuccess))
	binary.BigEndian.PutUint32(hdr[4:], uint32(cc))
	rpHash := sha256.New()
	rpHash.Write(hdr[:])
	rpHash.Write(params)
	var want [sha256.Size]byte
	if err := s.hmac(want[:], rpHash.Sum(nil), nonce, s.nonceCaller[:], []byte{attrs}); err != nil {
		return nil, nil, 0, err
	}
	if !hmac.Equal(want[:], mac) {
		return nil, nil, 0, errResponseHMAC
	}
	return params, nonce, attrs, nil
}

// cutTPM2B splits a TPM2B off the front of b.
func cutTPM2B(b []byte) (buf, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, nil, false
	}
	return b[2 : 2+n], b[2+n:], true
}

// cfbDecrypt decrypts data in place with AES-CFB (full-block feedback),
// keeping the feedback and key stream in the session's locked page: a
// cipher.Stream from crypto/cipher would keep the last ciphertext block and
// its key stream, which XOR to the last plaintext block, on the heap.
func (s *unsealSession) cfbDecrypt(data, key, iv []byte) error {
	return s.cfb(data, key, iv, false)
}

// cfbEncrypt encrypts data in place with AES-CFB, as cfbDecrypt decrypts.
func (s *unsealSession) cfbEncrypt(data, key, iv []byte) error {
	return s.cfb(data, key, iv, true)
}

// cfb runs AES-CFB over data in place, with its feedback and key stream in
// the session's locked page, which it clears, and wipes the key schedule.
func (s *unsealSession) cfb(data, key, iv []byte, encrypt bool) error {
	if err := seccrypt.CFB(data, key, iv, s.sec.Bytes()[offBlock:offBlock+2*aes.BlockSize], encrypt); err != nil {
		return fmt.Errorf("parameter encryption: %w", err)
	}
	return nil
}

// hmac writes HMAC-SHA256(s.key(), msg...) to out (RFC 2104), computing it
// in the session's locked page: the key, XORed into a block-sized pad, and
// the message are laid out there and hashed with sha256.Sum256, whose state
// stays on the stack. (crypto/hmac would copy the key's pads into heap
// memory it never clears.)
func (s *unsealSession) hmac(out []byte, msg ...[]byte) error {
	return hmacLocked(out, s.key(), s.sec.Bytes()[offScratch:], s.sec.Bytes()[offInner:offInner+sha256.Size], msg...)
}

// hmacLocked writes HMAC-SHA256(key, msg...) to out, with key at most one
// block, using scratch for the pads and message and inner for the inner
// digest (both locked memory), which it clears (seccrypt.HMAC).
func hmacLocked(out, key, scratch, inner []byte, msg ...[]byte) error {
	return seccrypt.HMAC(out, key, scratch, inner, msg...)
}

// kdfa writes KDFa(SHA-256, key, label, contextU, contextV, 8*len(out))
// to out (Part 1, 11.4.10.2), for len(out) of at most one digest: one HMAC
// over counter 1 || label || 0 || contextU || contextV || bits.
func (s *unsealSession) kdfa(out, key []byte, label string, contextU, contextV []byte) {
	// The inputs are bounded by the callers (32-byte keys, 16-byte nonces).
	_ = seccrypt.KDFa(out, key, label, contextU, contextV, s.sec.Bytes()[offScratch:], s.sec.Bytes()[offInner:offInner+sha256.Size])
}

// wipeBlock zeroes the memory of an AES cipher.Block (seccrypt.WipeBlock):
// crypto/aes keeps the expanded key schedule in a heap object it never
// clears, and the schedule gives the key back.
func wipeBlock(b cipher.Block) bool {
	return seccrypt.WipeBlock(b)
}
