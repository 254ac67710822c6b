package attest

import "testing"

// BenchmarkVerify measures Verify of the golden evidence with every check.
func BenchmarkVerify(b *testing.B) {
	g := loadGolden(b)
	opts := g.opts()
	for b.Loop() {
		if _, err := Verify(g.e, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseSSH measures decoding the golden evidence.
func BenchmarkParseSSH(b *testing.B) {
	g := loadGolden(b)
	data := g.e.MarshalSSH()
	for b.Loop() {
		if _, err := ParseSSH(data); err != nil {
			b.Fatal(err)
		}
	}
}
