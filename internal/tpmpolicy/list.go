package tpmpolicy

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ParseList parses a PCR selection as people write it: indexes 0-23
// separated by commas, "0,7", spaces allowed around them. Each index may
// appear once; the result is sorted.
func ParseList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n >= NumPCRs {
			return nil, fmt.Errorf("bad PCR %q: want numbers 0-%d separated by commas, e.g. 0,7", f, NumPCRs-1)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("PCR %d listed twice", n)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// FormatList writes indexes as ParseList reads them: "0,7", "" for none.
func FormatList(indexes []int) string {
	s := make([]string, len(indexes))
	for i, n := range indexes {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// ParseValue parses an expected PCR value as people write it: "N=HEX",
// with N a PCR 0-23. The value may be of any length: a digest of the bank
// the caller compares with.
func ParseValue(s string) (int, []byte, error) {
	idx, val, ok := strings.Cut(s, "=")
	n, err := strconv.Atoi(idx)
	if !ok || err != nil || n < 0 || n >= NumPCRs {
		return 0, nil, fmt.Errorf("want N=HEX with N in 0-%d, got %q", NumPCRs-1, s)
	}
	v, err := hex.DecodeString(val)
	if err != nil {
		return 0, nil, fmt.Errorf("PCR %d: value is not hex", n)
	}
	return n, v, nil
}
