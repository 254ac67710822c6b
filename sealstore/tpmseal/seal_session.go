package tpmseal

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/edlocked"
	"github.com/icn/icn-agent/internal/tpmdev"
	"github.com/icn/icn-agent/sealstore"
)

// The TPM2_Create of a sealed object, by hand.
//
// go-tpm's Create marshals the TPM2B_SENSITIVE_CREATE (the seed, and the
// PIN's authValue as userAuth) into heap buffers before encrypting them,
// and nobody can wipe those. So createSealedLocked runs TPM2_Create in a
// session of its own, as the unseal does (unseal_session.go):
//
//   - An HMAC session salted to the SRK (startSession), asking for
//     AES-128-CFB encryption of the command's first parameter.
//   - The TPMS_SENSITIVE_CREATE (userAuth: the PIN's authValue, computed
//     there, or empty; data: the seed, copied from the caller's locked
//     buffer) is laid out in the session's locked page and encrypted in
//     place there, with key || IV = KDFa(sessionKey || authValue of the
//     parent (the SRK's, empty), "CFB", nonceCaller, nonceTPM, 256) (Part
//     1, 21.3: for a command, the caller's nonce comes first). Only then
//     is it copied into the command, which holds nothing in clear; the
//     area is cleared.
//   - cpHash is computed over the encrypted parameters, and the command's
//     HMAC (keyed by sessionKey: the SRK's authValue is empty) in the
//     locked page. The response's code and HMAC are checked, and its
//     outPrivate and outPublic (encrypted and public) are parsed with
//     go-tpm.
//
// The plaintext seed and authValue are then only in the caller's buffer
// and the session page; what reaches the heap and the TPM is encrypted.
// What remains is the salt of StartAuthSession, computed by go-tpm on the
// heap, as for the unseal.

// attrDecrypt is TPMA_SESSION decrypt: the command's first parameter is
// encrypted. continueSession is clear, as for the unseal.
const attrDecrypt = 1 << 5

// createSealedLocked runs TPM2_Create under the SRK for a sealed object
// holding seed (SeedSize bytes, the caller's locked memory), protected by
// the PIN's authValue if pin is not empty (the object then has noDA
// clear), in a one-off HMAC session salted to the SRK that encrypts the
// sensitive data. It returns the marshalled TPM2B_PUBLIC and TPM2B_PRIVATE.
func createSealedLocked(tpm transport.TPM, srk *tpmdev.SRK, seed, policy, pin []byte) (pub, priv []byte, err error) {
	if len(seed) != sealstore.SeedSize {
		return nil, nil, fmt.Errorf("seed is %d bytes, want %d", len(seed), sealstore.SeedSize)
	}
	inPublic := tpm2.Marshal(tpm2.New2B(sealedTemplate(policy, len(pin) > 0)))
	s, err := startSession(tpm, srk, tpm2.TPMSEHMAC, nil)
	if err != nil {
		return nil, nil, err
	}
	defer s.close(tpm)

	var cmd []byte
	var runErr error
	edlocked.Deep(func() { cmd, runErr = s.createCommand(srk, seed, pin, inPublic) })
	if runErr != nil {
		return nil, nil, runErr
	}
	rsp, err := tpm.Send(cmd)
	if err != nil {
		return nil, nil, fmt.Errorf("create sealed object: %w", err)
	}
	edlocked.Deep(func() { pub, priv, runErr = s.finishCreate(rsp) })
	if runErr != nil {
		return nil, nil, fmt.Errorf("create sealed object: %w", runErr)
	}
	return pub, priv, nil
}

// createCommand marshals TPM2_Create (Part 3, 12.1) with the SRK as parent
// and one authorization, this session's: inSensitive encrypted, then
// inPublic, an empty outsideInfo and an empty creationPCR. It runs inside
// edlocked.Deep: the sensitive data, the CFB key and the HMAC are worked
// on in the session's locked page, with stack frames that are scrubbed.
func (s *unsealSession) createCommand(srk *tpmdev.SRK, seed, pin, inPublic []byte) ([]byte, error) {
	page := s.sec.Bytes()
	// TPM2B_SENSITIVE_CREATE: size, then TPMS_SENSITIVE_CREATE: userAuth
	// (TPM2B_AUTH), data (TPM2B_SENSITIVE_DATA).
	authLen := 0
	if len(pin) > 0 {
		authLen = sha256.Size
	}
	inner := 2 + authLen + 2 + len(seed)
	sens := page[offSensitive : offSensitive+2+inner]
	defer clear(sens)
	binary.BigEndian.PutUint16(sens[0:], uint16(inner))
	binary.BigEndian.PutUint16(sens[2:], uint16(authLen))
	if authLen > 0 {
		pinAuthValue((*[sha256.Size]byte)(sens[4:4+sha256.Size]), pin)
	}
	binary.BigEndian.PutUint16(sens[4+authLen:], uint16(len(seed)))
	copy(sens[6+authLen:], seed)

	// Encrypt the TPM2B's buffer in place (Part 1, 21.3): the session key
	// with the SRK's empty authValue, nonceCaller then nonceTPM.
	cfb := page[offCFB : offCFB+32]
	defer clear(cfb)
	s.kdfa(cfb, s.key(), "CFB", s.nonceCaller[:], s.nonceTPM)
	if err := s.cfbEncrypt(sens[2:], cfb[:16], cfb[16:]); err != nil {
		return nil, err
	}

	// The parameters, as sent: nothing in them is in clear any more.
	params := make([]byte, 0, len(sens)+len(inPublic)+6)
	params = append(params, sens...)
	params = append(params, inPublic...)
	params = append(params, 0, 0)       // outsideInfo: empty TPM2B_DATA
	params = append(params, 0, 0, 0, 0) // creationPCR: no selection

	var cc [4]byte
	binary.BigEndian.PutUint32(cc[:], uint32(tpm2.TPMCCCreate))
	h := sha256.New()
	h.Write(cc[:])
	h.Write(srk.Name.Buffer)
	h.Write(params)
	cpHash := h.Sum(nil)
	var mac [sha256.Size]byte
	// HMAC(sessionKey || the SRK's empty authValue, cpHash || nonceCaller
	// || nonceTPM || attributes), Part 1, 19.6.5.
	if err := s.hmac(mac[:], cpHash, s.nonceCaller[:], s.nonceTPM, []byte{attrDecrypt}); err != nil {
		return nil, err
	}

	var auth []byte
	auth = binary.BigEndian.AppendUint32(auth, uint32(s.handle))
	auth = binary.BigEndian.AppendUint16(auth, sessionNonceSize)
	auth = append(auth, s.nonceCaller[:]...)
	auth = append(auth, attrDecrypt)
	auth = binary.BigEndian.AppendUint16(auth, sha256.Size)
	auth = append(auth, mac[:]...)
	size := 10 + 4 + 4 + len(auth) + len(params)
	cmd := make([]byte, 0, size)
	cmd = binary.BigEndian.AppendUint16(cmd, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(size))
	cmd = append(cmd, cc[:]...)
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(srk.Handle))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(len(auth)))
	cmd = append(cmd, auth...)
	cmd = append(cmd, params...)
	return cmd, nil
}

// finishCreate checks the response to TPM2_Create (its code, framing and
// HMAC) and returns its outPublic and outPrivate as marshalled TPM2Bs. A
// TPM error is returned as the tpm2.TPMRC go-tpm would return. It runs
// inside edlocked.Deep, for the HMAC.
func (s *unsealSession) finishCreate(rsp []byte) (pub, priv []byte, err error) {
	// The parameters: outPrivate, outPublic, creationData, creationHash,
	// creationTicket.
	params, _, _, err := s.checkResponse(rsp, tpm2.TPMCCCreate, "TPM2_Create")
	if err != nil {
		return nil, nil, err
	}
	privBuf, rest, ok := cutTPM2B(params)
	if !ok {
		return nil, nil, fmt.Errorf("%w: outPrivate", tpmdev.ErrMalformedResponse)
	}
	pubBuf, _, ok := cutTPM2B(rest)
	if !ok {
		return nil, nil, fmt.Errorf("%w: outPublic", tpmdev.ErrMalformedResponse)
	}
	outPrivate, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](params[:2+len(privBuf)])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: outPrivate: %v", tpmdev.ErrMalformedResponse, err)
	}
	outPublic, err := tpm2.Unmarshal[tpm2.TPM2BPublic](rest[:2+len(pubBuf)])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: outPublic: %v", tpmdev.ErrMalformedResponse, err)
	}
	if _, err := outPublic.Contents(); err != nil {
		return nil, nil, fmt.Errorf("%w: outPublic: %v", tpmdev.ErrMalformedResponse, err)
	}
	return tpm2.Marshal(outPublic), tpm2.Marshal(outPrivate), nil
}
