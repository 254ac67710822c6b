package agentsrv

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/icn/icn-agent/internal/tpmfault"
)

// faultTimeout is the TPM command timeout of the fault tests: short, so
// that a hung TPM costs little time.
const faultTimeout = 200 * time.Millisecond

// TestAgentUnderTPMFaults runs the agent on the simulator, through the
// daemon's transport stack, and breaks the TPM while a client signs with
// an identity that needs an unseal. Whatever the fault, that client gets
// an error rather than a hang; the status tells why; meanwhile other
// clients list and sign with an identity already unsealed; and once the
// TPM behaves again, the identity unseals and signs.
func TestAgentUnderTPMFaults(t *testing.T) {
	tests := []struct {
		name string
		// inject breaks the TPM; heal repairs it, and returns once the
		// TPM is idle.
		inject func(s *simTPM)
		heal   func(t *testing.T, s *simTPM)
		// why is what the identity's last error must say.
		why string
	}{
		{
			name:   "hang",
			inject: func(s *simTPM) { s.inj.Add(tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.Hang())) },
			heal:   func(t *testing.T, s *simTPM) { s.releaseHung(t) },
			why:    "timed out",
		},
		{
			name:   "vanished device",
			inject: func(s *simTPM) { s.inj.Vanish() },
			heal: func(t *testing.T, s *simTPM) {
				s.tpm.SimulateReboot() // it comes back power-cycled: SRK gone
				s.inj.Restore()
			},
			why: "input/output error",
		},
		{
			name:   "lockout",
			inject: func(s *simTPM) { s.inj.Add(tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.Code(tpm2.TPMRCLockout))) },
			heal:   func(*testing.T, *simTPM) {},
			why:    "lockout",
		},
		{
			name: "retry forever",
			inject: func(s *simTPM) {
				s.inj.Add(tpmfault.Rule{Command: tpm2.TPMCCUnseal, Count: tpmfault.Forever, Fault: tpmfault.Code(tpm2.TPMRCRetry)})
			},
			heal: func(t *testing.T, s *simTPM) { s.inj.Clear() },
			why:  "TPM_RC_RETRY",
		},
		{
			name:   "object memory",
			inject: func(s *simTPM) { s.inj.Add(tpmfault.Next(tpm2.TPMCCLoad, tpmfault.Code(tpm2.TPMRCObjectMemory))) },
			heal:   func(*testing.T, *simTPM) {},
			why:    "TPM_RC_OBJECT_MEMORY",
		},
		{
			name:   "short read",
			inject: func(s *simTPM) { s.inj.Add(tpmfault.Next(tpm2.TPMCCUnseal, tpmfault.ShortRead(20))) },
			heal:   func(*testing.T, *simTPM) {},
			why:    "truncated",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSimTPM(t, faultTimeout)
			cold, warm := sim.seal(t, "cold"), sim.seal(t, "warm")
			ts := startServer(t, Config{Unsealer: sim, AutoLockTimeout: time.Hour}, cold, warm)
			other := ts.dial(t)
			mustSign(t, other, warm.Blob.PublicKey, []byte("unseal warm"))

			tt.inject(sim)
			signer := ts.dial(t)
			failed := make(chan error, 1)
			go func() {
				_, err := signer.Sign(cold.Blob.PublicKey, []byte("needs an unseal"))
				failed <- err
			}()
			if tt.name == "hang" {
				// Act while the TPM hangs, before the sign fails.
				select {
				case <-sim.inj.Hung():
				case <-time.After(30 * time.Second):
					t.Fatal("the TPM never started hanging")
				}
			}
			// Other clients are served meanwhile.
			if keys := listBlobs(t, other); len(keys) != 2 {
				t.Errorf("List while the TPM is broken: %v", keys)
			}
			mustSign(t, other, warm.Blob.PublicKey, []byte("warm still signs"))

			select {
			case err := <-failed:
				if err == nil {
					t.Fatal("sign succeeded although the TPM is broken")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("sign hung with the TPM")
			}
			if why := ts.identityStatus(t, "cold").LastError; !strings.Contains(strings.ToLower(why), strings.ToLower(tt.why)) {
				t.Errorf("last error %q; want it to say %q", why, tt.why)
			}

			tt.heal(t, sim)
			mustSign(t, signer, cold.Blob.PublicKey, []byte("after recovery"))
			if st := ts.identityStatus(t, "cold"); !st.Unsealed || st.LastError != "" {
				t.Errorf("after recovery: %+v", st)
			}
		})
	}
}
