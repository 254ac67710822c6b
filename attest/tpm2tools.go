package attest

import (
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Files written by WriteTPM2Tools.
const (
	TPM2ToolsMessage   = "quote.msg"
	TPM2ToolsSignature = "quote.sig"
	TPM2ToolsPCRs      = "quote.pcrs"
	TPM2ToolsAKPEM     = "ak.pub.pem"
	// TPM2ToolsQualification holds the hex -q value (see
	// WriteTPM2ToolsQualification).
	TPM2ToolsQualification = "quote.qualification"
)

// WriteTPM2ToolsQualification writes to dir/quote.qualification the hex of
// Binding(nonce, key) and a newline: the value tpm2_checkquote's -q option
// needs, computed from the verifier's own nonce and the key it expects
// rather than read back from the quote. It returns the hex.
func WriteTPM2ToolsQualification(dir string, nonce []byte, key ssh.PublicKey) (string, error) {
	q := hex.EncodeToString(Binding(nonce, key))
	if err := os.WriteFile(filepath.Join(dir, TPM2ToolsQualification), []byte(q+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("attest: write tpm2-tools files: %w", err)
	}
	return q, nil
}

// ExportTPM2Tools writes the quote in e into dir for tpm2-tools, creating
// dir (mode 0700) if it does not exist: the files of WriteTPM2Tools and,
// for the verifier's nonce and the identity key, the -q value
// (WriteTPM2ToolsQualification). It returns the tpm2_checkquote command
// that checks them (TPM2ToolsCommand).
func (e *Evidence) ExportTPM2Tools(dir string, nonce []byte, key ssh.PublicKey) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("attest: write tpm2-tools files: %w", err)
	}
	if err := e.WriteTPM2Tools(dir); err != nil {
		return "", err
	}
	q, err := WriteTPM2ToolsQualification(dir, nonce, key)
	if err != nil {
		return "", err
	}
	return TPM2ToolsCommand(dir, q), nil
}

// TPM2ToolsCommand returns the tpm2_checkquote command line that checks the
// files WriteTPM2Tools wrote into dir, with the -q value qualification (hex).
func TPM2ToolsCommand(dir, qualification string) string {
	f := func(name string) string { return shellQuote(filepath.Join(dir, name)) }
	return fmt.Sprintf("tpm2_checkquote -u %s -m %s -s %s -f %s -g sha256 -q %s",
		f(TPM2ToolsAKPEM), f(TPM2ToolsMessage), f(TPM2ToolsSignature), f(TPM2ToolsPCRs), qualification)
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// characters that are safe bare.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Layout of the PCR file tpm2_quote -o writes and tpm2_checkquote -f reads
// (tpm2-tools 5, "serialized" format): the tools' in-memory C structures,
// little-endian on the machines they run on:
//
//	TPML_PCR_SELECTION  uint32 count; 16 x { uint16 hash; uint8 sizeofSelect; uint8 pcrSelect[4]; uint8 pad }
//	uint32              number of TPML_DIGESTs that follow
//	TPML_DIGEST         uint32 count; 8 x { uint16 size; uint8 buffer[64] }   (repeated)
const (
	toolsNumBanks      = 16 // TPM2_NUM_PCR_BANKS
	toolsSelectMax     = 4  // TPM2_PCR_SELECT_MAX
	toolsSelectionSize = 2 + 1 + toolsSelectMax + 1
	toolsDigestsPerL   = 8  // TPML_DIGEST holds at most 8 digests
	toolsDigestMax     = 64 // sizeof(TPMU_HA)
	toolsDigestSize    = 2 + toolsDigestMax
)

// WriteTPM2Tools writes the quote in e into dir (which must exist) in the
// files tpm2-tools' tpm2_checkquote reads, so that a verifier can check it
// with an independent implementation:
//
//	quote.msg   the TPMS_ATTEST (Attest)
//	quote.sig   the TPMT_SIGNATURE (Signature)
//	quote.pcrs  the PCR selection and values, as tpm2_quote -o writes them
//	ak.pub.pem  the attestation key, PKIX "PUBLIC KEY" PEM
//
// Then
//
//	tpm2_checkquote -u ak.pub.pem -m quote.msg -s quote.sig -f quote.pcrs \
//	    -g sha256 -q HEX
//
// checks the signature, the magic, the PCR digest and extraData, where HEX
// is the hex of Binding(nonce, identity key), not of the nonce:
// tpm2_checkquote compares -q with extraData directly. It checks neither
// the certification of the sealed object nor the proof of possession, and
// pins nothing: only Verify checks everything.
//
// Existing files are replaced. e's structure is checked first; the quote
// itself is not verified.
func (e *Evidence) WriteTPM2Tools(dir string) error {
	if err := e.validate(); err != nil {
		return err
	}
	key, _, err := parseAKPublic(e.AKPublic)
	if err != nil {
		return fmt.Errorf("attest: write tpm2-tools files: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return fmt.Errorf("attest: write tpm2-tools files: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{TPM2ToolsMessage, e.Attest},
		{TPM2ToolsSignature, e.Signature},
		{TPM2ToolsPCRs, e.tpm2ToolsPCRs()},
		{TPM2ToolsAKPEM, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			return fmt.Errorf("attest: write tpm2-tools files: %w", err)
		}
	}
	return nil
}

// tpm2ToolsPCRs encodes the PCR selection and values in tpm2-tools'
// serialized format (see the layout above).
func (e *Evidence) tpm2ToolsPCRs() []byte {
	le := binary.LittleEndian
	var w []byte
	// TPML_PCR_SELECTION with one bank.
	w = le.AppendUint32(w, 1)
	sel := make([]byte, toolsNumBanks*toolsSelectionSize)
	m := maskOf(e.PCRs)
	le.PutUint16(sel, uint16(e.Bank))
	sel[2] = 3 // sizeofSelect
	sel[3], sel[4], sel[5] = byte(m), byte(m>>8), byte(m>>16)
	w = append(w, sel...)
	// The values, 8 per TPML_DIGEST, in index order.
	n := (len(e.PCRValues) + toolsDigestsPerL - 1) / toolsDigestsPerL
	w = le.AppendUint32(w, uint32(n))
	for i := 0; i < n; i++ {
		chunk := e.PCRValues[i*toolsDigestsPerL : min(len(e.PCRValues), (i+1)*toolsDigestsPerL)]
		w = le.AppendUint32(w, uint32(len(chunk)))
		digests := make([]byte, toolsDigestsPerL*toolsDigestSize)
		for j, v := range chunk {
			d := digests[j*toolsDigestSize:]
			le.PutUint16(d, uint16(len(v)))
			copy(d[2:2+toolsDigestMax], v)
		}
		w = append(w, digests...)
	}
	return w
}
