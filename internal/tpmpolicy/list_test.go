package tpmpolicy

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParseList(t *testing.T) {
	for in, want := range map[string][]int{"0,7": {0, 7}, "7, 0": {0, 7}, "23": {23}, " 4 ,2,0": {0, 2, 4}} {
		got, err := ParseList(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseList(%q) = %v, %v; want %v", in, got, err, want)
		}
		if FormatList(got) != FormatList(want) {
			t.Errorf("FormatList(%v) = %q", got, FormatList(got))
		}
	}
	for in, want := range map[string]string{"": `bad PCR ""`, "24": `bad PCR "24"`, "-1": `bad PCR "-1"`, "0,x": `bad PCR "x"`, "7,7": "PCR 7 listed twice", "0,,7": `bad PCR ""`} {
		if _, err := ParseList(in); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ParseList(%q): error %v, want %q", in, err, want)
		}
	}
	if FormatList(nil) != "" {
		t.Errorf("FormatList(nil) = %q", FormatList(nil))
	}
}

func TestParseValue(t *testing.T) {
	if n, v, err := ParseValue("16=00ff"); n != 16 || !bytes.Equal(v, []byte{0, 0xff}) || err != nil {
		t.Errorf("ParseValue(16=00ff) = %d, %x, %v", n, v, err)
	}
	for in, want := range map[string]string{"16": `want N=HEX with N in 0-23, got "16"`, "24=00": `got "24=00"`, "-1=00": `got "-1=00"`, "x=00": `got "x=00"`, "7=0g": "PCR 7: value is not hex"} {
		if _, _, err := ParseValue(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseValue(%q): error %v, want %q", in, err, want)
		}
	}
}
