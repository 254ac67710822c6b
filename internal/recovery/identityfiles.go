package recovery

import (
	"fmt"

	"filippo.io/age"

	"github.com/icn/icn-agent/internal/safefile"
	"github.com/icn/icn-agent/internal/secmem"
)

// MaxIdentityFile bounds an identity file: age identities, one a line, or
// an SSH private key.
const MaxIdentityFile = 1 << 20

// ReadIdentityFiles reads the age identities in the files at paths (see
// ParseIdentities), each file in locked memory, wiped once parsed.
// passphrase(path) returns the function that gives the passphrase of an
// encrypted SSH key in the file at path, asked for only when the key is
// used; nil makes such a key an error now. Errors reading a file wrap
// its error after "identity file: ".
func ReadIdentityFiles(paths []string, passphrase func(path string) func() ([]byte, error)) ([]age.Identity, error) {
	var out []age.Identity
	for _, path := range paths {
		buf, err := secmem.New(MaxIdentityFile)
		if err != nil {
			return nil, err
		}
		n, err := safefile.ReadInto(path, buf.Bytes(), safefile.Options{})
		if err != nil {
			buf.Destroy()
			return nil, fmt.Errorf("identity file: %w", err)
		}
		var ask func() ([]byte, error)
		if passphrase != nil {
			ask = passphrase(path)
		}
		ids, err := ParseIdentities(path, buf.Bytes()[:n], ask)
		buf.Destroy()
		if err != nil {
			return nil, err
		}
		out = append(out, ids...)
	}
	return out, nil
}

// ParseRecipientArgs parses recipients as a user gives them, each
// argument an age recipient, an SSH public key line or a file of them
// (see ParseRecipients), and returns them all in order.
func ParseRecipientArgs(args []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for _, arg := range args {
		rs, err := ParseRecipients(arg)
		if err != nil {
			return nil, fmt.Errorf("%w; a recipient is an age public key (age1...), an SSH public key line, or a file of them", err)
		}
		out = append(out, rs...)
	}
	return out, nil
}
