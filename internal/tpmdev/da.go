package tpmdev

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DAState is the TPM's dictionary-attack (DA) protection state, from
// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES). Every failed authorization of
// a DA-protected object (one without noDA, such as a PIN-protected sealed
// identity) adds one to Counter; when Counter reaches MaxTries the TPM is
// in lockout and refuses every DA-protected object (TPM_RC_LOCKOUT) until
// Counter falls below MaxTries again: one failure is forgotten every
// RecoveryTime seconds the TPM is powered (or the lockout is reset with
// the lockout hierarchy's authorization).
type DAState struct {
	// Counter is TPM_PT_LOCKOUT_COUNTER: failed authorizations counted.
	Counter uint32
	// MaxTries is TPM_PT_MAX_AUTH_FAIL: the count at which lockout starts.
	MaxTries uint32
	// RecoveryTime is TPM_PT_LOCKOUT_INTERVAL, in seconds: how often one
	// failure is forgotten. Zero disables DA protection.
	RecoveryTime uint32
	// LockoutRecovery is TPM_PT_LOCKOUT_RECOVERY, in seconds: how long the
	// lockout hierarchy stays locked after a failed lockout authorization.
	LockoutRecovery uint32
	// InLockout is TPMA_PERMANENT.inLockout.
	InLockout bool
}

// ReadDA reads the TPM's dictionary-attack state.
func ReadDA(tpm transport.TPM) (DAState, error) {
	var st DAState
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTLockoutCounter),
		PropertyCount: 4,
	}.Execute(tpm)
	if err != nil {
		return st, fmt.Errorf("tpmdev: read dictionary-attack state: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return st, fmt.Errorf("tpmdev: read dictionary-attack state: %w", err)
	}
	found := 0
	for _, p := range props.TPMProperty {
		switch p.Property {
		case tpm2.TPMPTLockoutCounter:
			st.Counter = p.Value
		case tpm2.TPMPTMaxAuthFail:
			st.MaxTries = p.Value
		case tpm2.TPMPTLockoutInterval:
			st.RecoveryTime = p.Value
		case tpm2.TPMPTLockoutRecovery:
			st.LockoutRecovery = p.Value
		default:
			continue
		}
		found++
	}
	if found != 4 {
		return st, fmt.Errorf("tpmdev: read dictionary-attack state: the TPM returned %d of the 4 properties", found)
	}
	rsp, err = tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTPermanent),
		PropertyCount: 1,
	}.Execute(tpm)
	if err != nil {
		return st, fmt.Errorf("tpmdev: read dictionary-attack state: %w", err)
	}
	if props, err = rsp.CapabilityData.Data.TPMProperties(); err != nil {
		return st, fmt.Errorf("tpmdev: read dictionary-attack state: %w", err)
	}
	for _, p := range props.TPMProperty {
		if p.Property == tpm2.TPMPTPermanent {
			// TPMA_PERMANENT bit 9 is inLockout.
			st.InLockout = p.Value&(1<<9) != 0
		}
	}
	return st, nil
}

// LockoutCounter returns the TPM's dictionary-attack counter
// (TPM_PT_LOCKOUT_COUNTER) and the count at which it locks out
// (TPM_PT_MAX_AUTH_FAIL).
func LockoutCounter(tpm transport.TPM) (counter, max uint32, err error) {
	st, err := ReadDA(tpm)
	if err != nil {
		return 0, 0, err
	}
	return st.Counter, st.MaxTries, nil
}

// SetDAParameters runs TPM2_DictionaryAttackParameters with an empty
// lockout authorization (the lockout hierarchy's password as manufactured
// and on a TPM nobody took ownership of): the lockout threshold, how often
// (seconds) one failure is forgotten, and how long the lockout hierarchy
// stays locked after its own failed authorization. On a TPM whose lockout
// authorization is set this fails with TPM_RC_BAD_AUTH (and counts towards
// the lockout hierarchy's own lockout); use tpm2_dictionarylockout there.
// Tests and tooling use it; the agent never does.
func SetDAParameters(tpm transport.TPM, maxTries, recoveryTime, lockoutRecovery uint32) error {
	params := binary.BigEndian.AppendUint32(nil, maxTries)
	params = binary.BigEndian.AppendUint32(params, recoveryTime)
	params = binary.BigEndian.AppendUint32(params, lockoutRecovery)
	if err := lockoutCommand(tpm, tpm2.TPMCCDictionaryAttackParameters, params); err != nil {
		return fmt.Errorf("tpmdev: set dictionary-attack parameters: %w", err)
	}
	return nil
}

// ResetLockout runs TPM2_DictionaryAttackLockReset with an empty lockout
// authorization: the counter goes to zero and a lockout ends. See
// SetDAParameters about the authorization.
func ResetLockout(tpm transport.TPM) error {
	if err := lockoutCommand(tpm, tpm2.TPMCCDictionaryAttackLockReset, nil); err != nil {
		return fmt.Errorf("tpmdev: reset dictionary-attack lockout: %w", err)
	}
	return nil
}

// lockoutCommand sends a command whose only handle is TPM_RH_LOCKOUT,
// authorized with an empty password, followed by params. go-tpm v0.9.8
// has no types for the dictionary-attack commands, so the command is
// marshalled here:
//
//	TPM_ST_SESSIONS, size, command code,
//	TPM_RH_LOCKOUT,
//	authorization size 9: TPM_RS_PW, empty nonce, attributes 0, empty hmac,
//	params
func lockoutCommand(tpm transport.TPM, cc tpm2.TPMCC, params []byte) error {
	auth := []byte{0x40, 0x00, 0x00, 0x09, 0, 0, 0, 0, 0}
	cmd := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, 0) // size, set below
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(cc))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRHLockout))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(len(auth)))
	cmd = append(cmd, auth...)
	cmd = append(cmd, params...)
	binary.BigEndian.PutUint32(cmd[2:6], uint32(len(cmd)))
	rsp, err := tpm.Send(cmd)
	if err != nil {
		return err
	}
	if len(rsp) < headerSize {
		return fmt.Errorf("response of %d bytes, shorter than a header", len(rsp))
	}
	if rc := tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])); rc != tpm2.TPMRCSuccess {
		return rc
	}
	return nil
}
