package agentsrv

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/ssh"
)

// Agent protocol message numbers (OpenSSH's PROTOCOL.agent).
const (
	msgFailure           = 5
	msgRequestIdentities = 11
	msgIdentitiesAnswer  = 12
	msgSignRequest       = 13
	msgSignResponse      = 14
	msgAddIdentity       = 17
	msgRemoveIdentity    = 18
	msgRemoveAll         = 19
	msgLock              = 22
	msgUnlock            = 23
	msgAddIDConstrained  = 25
	msgExtension         = 27
	msgExtensionFailure  = 28
)

// Key constraints of an ADD_ID_CONSTRAINED request.
const (
	constrainLifetime  = 1
	constrainConfirm   = 2
	constrainMaxSign   = 3 // OpenSSH's XMSS signature budget; x/crypto's old extension number
	constrainExtension = 255
)

// errMalformed is wrapped by every parse error of a request.
var errMalformed = errors.New("agentsrv: malformed request")

// request is one parsed agent request. Every byte slice in it points into
// the request buffer it was parsed from (the connection's locked buffer):
// parsing copies nothing, so secrets (passphrases, private keys, PINs in
// extension contents) stay where the connection wipes them.
type request struct {
	typ byte

	key   []byte // SIGN_REQUEST, REMOVE_IDENTITY: public key blob, SSH wire format
	data  []byte // SIGN_REQUEST: data to sign
	flags uint32 // SIGN_REQUEST

	pass []byte // LOCK, UNLOCK

	extName     []byte // EXTENSION
	extContents []byte // EXTENSION: the rest of the message

	add addRequest // ADD_IDENTITY, ADD_ID_CONSTRAINED
}

// addRequest is an ADD_IDENTITY or ADD_ID_CONSTRAINED request. Which key
// fields are set depends on keyType; see OpenSSH's PROTOCOL.agent and
// ssh-agent.c (sshkey_private_deserialize).
type addRequest struct {
	keyType string
	cert    []byte // the certificate, for the *-cert-v01@openssh.com types

	edPub  []byte // ssh-ed25519: 32-byte public key
	edPriv []byte // ssh-ed25519: 64 bytes, seed || public key

	rsaN, rsaE, rsaD, rsaIqmp, rsaP, rsaQ []byte // ssh-rsa: mpints (n, e absent for a certificate)

	ecCurve []byte // ecdsa-sha2-*: curve name ("nistp256"), absent for a certificate
	ecQ     []byte // ecdsa-sha2-*: public point, absent for a certificate
	ecD     []byte // ecdsa-sha2-*: private scalar, mpint

	comment []byte

	lifetime uint32
	confirm  bool
	// unsupported names the first constraint that cannot be honoured
	// (an extension's name, or "maxsign"); the key is then refused.
	unsupported string
}

// readString reads an SSH string (uint32 length, then the bytes).
func readString(s *cryptobyte.String, out *[]byte) bool {
	var n uint32
	if !s.ReadUint32(&n) || uint64(n) > uint64(len(*s)) {
		return false
	}
	return s.ReadBytes(out, int(n))
}

// readMPInt reads an SSH mpint that must not be negative, and returns its
// magnitude's bytes (a leading zero byte possibly included).
func readMPInt(s *cryptobyte.String, out *[]byte) bool {
	if !readString(s, out) {
		return false
	}
	return len(*out) == 0 || (*out)[0]&0x80 == 0
}

// parseRequest parses the body of an agent request (its type byte and
// what follows). Unknown types parse to just their type, and the caller
// answers them with SSH_AGENT_FAILURE.
func parseRequest(body []byte) (request, error) {
	var r request
	if len(body) == 0 {
		return r, fmt.Errorf("%w: empty", errMalformed)
	}
	r.typ = body[0]
	s := cryptobyte.String(body[1:])
	ok := true
	switch r.typ {
	case msgRequestIdentities, msgRemoveAll:
		// OpenSSH ignores trailing bytes here too.
	case msgSignRequest:
		ok = readString(&s, &r.key) && readString(&s, &r.data) && s.ReadUint32(&r.flags)
	case msgRemoveIdentity:
		ok = readString(&s, &r.key)
	case msgLock, msgUnlock:
		ok = readString(&s, &r.pass)
	case msgExtension:
		ok = readString(&s, &r.extName)
		r.extContents = s
	case msgAddIdentity, msgAddIDConstrained:
		var err error
		if r.add, err = parseAdd(&s, r.typ == msgAddIDConstrained); err != nil {
			return r, err
		}
	}
	if !ok {
		return r, fmt.Errorf("%w: message %d", errMalformed, r.typ)
	}
	return r, nil
}

// parseAdd parses the key, comment and (if constrained) constraints of an
// add request, s positioned after the type byte.
func parseAdd(s *cryptobyte.String, constrained bool) (addRequest, error) {
	var a addRequest
	var typ []byte
	if !readString(s, &typ) {
		return a, fmt.Errorf("%w: add: key type", errMalformed)
	}
	a.keyType = string(typ)
	ok := true
	switch a.keyType {
	case ssh.KeyAlgoED25519:
		ok = readString(s, &a.edPub) && readString(s, &a.edPriv)
	case ssh.CertAlgoED25519v01:
		ok = readString(s, &a.cert) && readString(s, &a.edPub) && readString(s, &a.edPriv)
	case ssh.KeyAlgoRSA:
		ok = readMPInt(s, &a.rsaN) && readMPInt(s, &a.rsaE) && readMPInt(s, &a.rsaD) &&
			readMPInt(s, &a.rsaIqmp) && readMPInt(s, &a.rsaP) && readMPInt(s, &a.rsaQ)
	case ssh.CertAlgoRSAv01:
		ok = readString(s, &a.cert) && readMPInt(s, &a.rsaD) &&
			readMPInt(s, &a.rsaIqmp) && readMPInt(s, &a.rsaP) && readMPInt(s, &a.rsaQ)
	case ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		ok = readString(s, &a.ecCurve) && readString(s, &a.ecQ) && readMPInt(s, &a.ecD)
	case ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01:
		ok = readString(s, &a.cert) && readMPInt(s, &a.ecD)
	default:
		return a, fmt.Errorf("%w: add: unsupported key type %q", errMalformed, a.keyType)
	}
	if !ok || !readString(s, &a.comment) {
		return a, fmt.Errorf("%w: add: %s key", errMalformed, a.keyType)
	}
	if !constrained {
		if !s.Empty() {
			return a, fmt.Errorf("%w: add: trailing data", errMalformed)
		}
		return a, nil
	}
	for !s.Empty() {
		var c uint8
		s.ReadUint8(&c)
		switch c {
		case constrainLifetime:
			if !s.ReadUint32(&a.lifetime) {
				return a, fmt.Errorf("%w: add: lifetime constraint", errMalformed)
			}
		case constrainConfirm:
			a.confirm = true
		case constrainMaxSign:
			// Nothing after it can be parsed reliably (OpenSSH sends a
			// uint32, x/crypto's old extensions a name): refuse the key.
			if a.unsupported == "" {
				a.unsupported = "maxsign"
			}
			return a, nil
		case constrainExtension:
			var name []byte
			if !readString(s, &name) {
				return a, fmt.Errorf("%w: add: constraint extension", errMalformed)
			}
			if a.unsupported == "" {
				a.unsupported = string(name)
			}
			// Its contents depend on the extension: the key is refused
			// anyway, so the rest is not parsed.
			return a, nil
		default:
			return a, fmt.Errorf("%w: add: unknown constraint %d", errMalformed, c)
		}
	}
	return a, nil
}

// Reply builders. Each appends to out (the connection's reply buffer,
// whose first four bytes are the frame length, filled in by the caller).

func appendString(out, s []byte) []byte {
	out = append(out, byte(len(s)>>24), byte(len(s)>>16), byte(len(s)>>8), byte(len(s)))
	return append(out, s...)
}

func appendUint32(out []byte, v uint32) []byte {
	return append(out, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// appendSignResponse appends SSH_AGENT_SIGN_RESPONSE with a signature of
// the given format and blob (and rest, for formats that carry more).
func appendSignResponse(out []byte, format string, blob, rest []byte) []byte {
	out = append(out, msgSignResponse)
	out = appendUint32(out, uint32(4+len(format)+4+len(blob)+len(rest)))
	out = appendUint32(out, uint32(len(format)))
	out = append(out, format...)
	out = appendString(out, blob)
	return append(out, rest...)
}
