package attest

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"golang.org/x/crypto/ssh"
)

// The agent parses the quote and activation requests of any client; these
// fuzzers check that the parsers round-trip through the encoding the
// requests are built with (RequestEvidence, RequestActivation).

func FuzzParseAgentRequest(f *testing.F) {
	pub, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)).Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ssh.Marshal(AgentRequest{Key: pub.Marshal(), Nonce: bytes.Repeat([]byte{1}, MinNonceSize)}))
	f.Add(ssh.Marshal(AgentRequest{Key: pub.Marshal(), Nonce: bytes.Repeat([]byte{2}, MaxNonceSize), ExtraPCRs: []byte{10, 16, 23}}))
	f.Add(ssh.Marshal(AgentRequest{Key: pub.Marshal(), Nonce: bytes.Repeat([]byte{3}, MinNonceSize), ExtraPCRs: []byte{24}}))
	f.Fuzz(func(t *testing.T, content []byte) {
		key, nonce, pcrs, err := ParseAgentRequest(content)
		if err != nil {
			return
		}
		req := AgentRequest{Key: key.Marshal(), Nonce: nonce}
		for _, p := range pcrs {
			req.ExtraPCRs = append(req.ExtraPCRs, byte(p))
		}
		once := ssh.Marshal(req)
		key2, nonce2, pcrs2, err := ParseAgentRequest(once)
		if err != nil {
			t.Fatalf("the re-encoded request does not parse: %v", err)
		}
		if !bytes.Equal(key2.Marshal(), key.Marshal()) || !bytes.Equal(nonce2, nonce) || len(pcrs2) != len(pcrs) {
			t.Fatal("round trip changed the request")
		}
		for i := range pcrs {
			if pcrs[i] != pcrs2[i] || pcrs[i] < 0 || pcrs[i] > 23 {
				t.Fatalf("PCRs %v, then %v", pcrs, pcrs2)
			}
		}
	})
}

func FuzzParseActivateRequest(f *testing.F) {
	f.Add(ssh.Marshal(activateRequest{Blob: []byte("credential blob"), Secret: []byte("encrypted secret")}))
	f.Add(ssh.Marshal(activateRequest{Blob: bytes.Repeat([]byte{1}, maxCredential+1), Secret: []byte{1}}))
	f.Fuzz(func(t *testing.T, content []byte) {
		blob, secret, err := ParseActivateRequest(content)
		if err != nil {
			return
		}
		// The encoding is canonical: what parses is exactly what
		// RequestActivation would have sent.
		if again := ssh.Marshal(activateRequest{Blob: blob, Secret: secret}); !bytes.Equal(again, content) {
			t.Fatalf("request %x re-encodes as %x", content, again)
		}
	})
}
