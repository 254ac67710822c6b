// Package srk names the TPM's storage root key (SRK) the way icn-agent's
// public packages hand it to their callers and take it from their TPM
// implementations.
//
// sealstore seals under the SRK and salts its sessions with it; a program
// that owns its own go-tpm transport implements tpmseal.TPM by loading
// the SRK once (the TCG ECC P-256 template, tpm2.ECCSRKTemplate, or the
// key persisted at 0x81000001) and passing a *Key to each callback.
// icn-agent's own TPM layer (internal/tpmdev) does exactly that: its SRK
// type is this one.
//
// The package holds only this type, so it costs an importer nothing but
// go-tpm's tpm2 package (pure Go).
package srk

import "github.com/google/go-tpm/tpm2"

// Key is a loaded storage root key: the parent of every sealed object and
// the key that salts sessions so secrets never cross the bus in clear.
type Key struct {
	// Handle is where the key is loaded (transient or persistent).
	Handle tpm2.TPMHandle
	// Name is the key's TPM Name, which sealed blobs record.
	Name tpm2.TPM2BName
	// Public is the key's public area, used to salt sessions.
	Public tpm2.TPMTPublic
	// Persistent is true when the key is the one at the TCG's reserved
	// handle 0x81000001, not created by this process.
	Persistent bool
}

// AuthHandle returns the key as a parent for commands that need its
// (empty) authorization.
func (k *Key) AuthHandle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: k.Handle, Name: k.Name, Auth: tpm2.PasswordAuth(nil)}
}
