package main

import (
	"errors"

	"github.com/icn/icn-agent/internal/tpmdev"
)

// libraryHints are the hints for library errors any command may meet,
// wherever they come from.
func libraryHints(err error) []string {
	switch {
	case errors.Is(err, tpmdev.ErrOwnerAuth):
		return []string{"whoever knows the owner password can make the storage root key persistent, and icn-agent then uses it: " +
			"tpm2_createprimary -C o -P PASSWORD -g sha256 -G ecc256:aes128cfb -c srk.ctx -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt' && " +
			"tpm2_evictcontrol -C o -P PASSWORD -c srk.ctx 0x81000001"}
	case errors.Is(err, tpmdev.ErrNoSimulator):
		return []string{"build icn-agent with cgo (CGO_ENABLED=1 and libssl-dev installed) for the development TPM, or use --tpm swtpm:unix:PATH"}
	}
	return nil
}
