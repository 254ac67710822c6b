package attest

import "testing"

func TestPolicyKindDescribe(t *testing.T) {
	for _, c := range []struct {
		kind PolicyKind
		pin  bool
		want string
	}{
		{PolicyUnknown, false, "PCR policy"},
		{PolicyPCR, false, "PCR policy"},
		{PolicyPCR, true, "PCR policy with PIN"},
		{PolicyAuthorizedPCR, false, "signed PCR policy"},
		{PolicyAuthorizedPCR, true, "signed PCR policy with PIN"},
	} {
		if got := c.kind.Describe(c.pin); got != c.want {
			t.Errorf("%v.Describe(%v) = %q; want %q", c.kind, c.pin, got, c.want)
		}
	}
}
