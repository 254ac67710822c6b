package agentsrv

import (
	"maps"
	"slices"

	"github.com/icn/icn-agent/sealstore"
)

// UpdatePCRs tells the server the platform's PCR values (SHA-256 bank)
// after some of them changed. The cached seed of every identity bound to a
// changed PCR is zeroized: the platform is no longer in the state the seed
// was unsealed in. Each such identity gets one log line per change: a
// warning naming the PCRs that no longer match its sealing-time values (it
// will not unseal until resealed or the platform returns to that state),
// or a note that it still matches. Status reports the mismatches.
func (s *Server) UpdatePCRs(current map[int][]byte, changed []int) {
	if len(changed) > 0 {
		s.metrics.PCRsChanged(changed)
	}
	type idBlob struct {
		e    *sealed
		blob *sealstore.Blob
	}
	s.mu.Lock()
	s.pcrs = maps.Clone(current)
	ids := make([]idBlob, len(s.sealed))
	for i, e := range s.sealed {
		ids[i] = idBlob{e, e.blob} // e.blob is guarded by s.mu
	}
	s.mu.Unlock()
	for _, ib := range ids {
		e, b := ib.e, ib.blob
		if !slices.ContainsFunc(b.Policy.Indexes(), func(i int) bool { return slices.Contains(changed, i) }) {
			continue
		}
		dropped := e.drop()
		if mm := pcrMismatch(b, current); len(mm) > 0 {
			s.log.Warn("agentsrv: identity no longer unseals: PCRs changed since it was sealed; reseal it or restore the platform state",
				"name", e.name, "fingerprint", e.fp, "pcrs", mm, "dropped_seed", dropped)
		} else if b.Policy.Kind == sealstore.PolicyAuthorizedPCR {
			s.log.Info("agentsrv: PCR changed; identity uses signed policies and unseals if one approves the new values",
				"name", e.name, "fingerprint", e.fp, "dropped_seed", dropped)
		} else {
			s.log.Info("agentsrv: PCR changed; identity still matches its sealing-time values",
				"name", e.name, "fingerprint", e.fp, "dropped_seed", dropped)
		}
	}
}

// pcrMismatch lists the PCRs of b's policy whose value in current is known
// and differs from the value recorded at seal time (none for signed
// policies, which record no values).
func pcrMismatch(b *sealstore.Blob, current map[int][]byte) []int {
	return b.Policy.Mismatch(current)
}
