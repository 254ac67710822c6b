package attesttpm

import (
	"context"
	"testing"
)

// BenchmarkQuote measures a whole Quote on the simulator with the AK
// already loaded: PCR reads, TPM2_Quote, loading the sealed object, the
// audited TPM2_ReadPublic, TPM2_GetSessionAuditDigest, flushes, the proof
// of possession (from a seed in memory) and the self-check.
func BenchmarkQuote(b *testing.B) {
	f := newFixture(b, "sim")
	id := f.seal("work", []int{0, 7})
	ak := f.ak("")
	nonce := newNonce(b)
	req := QuoteRequest{Nonce: nonce, ExtraPCRs: []int{10}, Sign: seedSigner(id.seed)}
	ctx := context.Background()
	if _, err := ak.Quote(ctx, f.tpm, id.subject(), req); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := ak.Quote(ctx, f.tpm, id.subject(), req); err != nil {
			b.Fatal(err)
		}
	}
}
