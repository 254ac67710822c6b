package tpmdev

import (
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/icn/icn-agent/internal/tpmpolicy"
)

// NumPCRs is the number of PCRs a PC client TPM has in each bank.
const NumPCRs = tpmpolicy.NumPCRs

// Selection returns the TPML_PCR_SELECTION selecting the given PCR indexes
// of one bank: a single TPMS_PCR_SELECTION with a 3-byte (sizeofSelect = 3)
// bitmap, bit i%8 of byte i/8 set for PCR i. This is the encoding a PC
// Client TPM expects and the one policy digests are computed over (it is
// tpmpolicy.Selection), so the same selection must be used for
// TPM2_PolicyPCR and TPM2_PCR_Read. Indexes outside 0..23 cannot be
// expressed and are ignored; duplicates select the PCR once.
func Selection(bank tpm2.TPMIAlgHash, indexes []int) tpm2.TPMLPCRSelection {
	return tpmpolicy.Selection(bank, indexes)
}

// ReadPCRs reads the given PCRs of one bank and returns their values in the
// order of indexes (which must be ascending and unique), and the TPM's PCR
// update counter at the first read. A TPM returns at most 8 PCRs per
// TPM2_PCR_Read, so this may take several commands; if the counter moves in
// between, it reads again so all values come from one state.
func ReadPCRs(tpm transport.TPM, bank tpm2.TPMIAlgHash, indexes []int) ([][]byte, uint32, error) {
	if !slices.IsSorted(indexes) || len(slices.Compact(slices.Clone(indexes))) != len(indexes) {
		return nil, 0, fmt.Errorf("tpmdev: PCR indexes %v are not ascending and unique", indexes)
	}
	for _, i := range indexes {
		if i < 0 || i >= NumPCRs {
			return nil, 0, fmt.Errorf("tpmdev: PCR %d out of range 0-%d", i, NumPCRs-1)
		}
	}
	for attempt := 0; attempt < 5; attempt++ {
		values, counter, consistent, err := readPCRsOnce(tpm, bank, indexes)
		if err != nil {
			return nil, 0, err
		}
		if consistent {
			return values, counter, nil
		}
	}
	return nil, 0, fmt.Errorf("tpmdev: PCRs kept changing while being read")
}

func readPCRsOnce(tpm transport.TPM, bank tpm2.TPMIAlgHash, indexes []int) ([][]byte, uint32, bool, error) {
	values := make([][]byte, 0, len(indexes))
	var counter uint32
	rest := indexes
	for first := true; len(rest) > 0; first = false {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: Selection(bank, rest)}.Execute(tpm)
		if err != nil {
			return nil, 0, false, fmt.Errorf("tpmdev: read PCRs %v: %w", rest, err)
		}
		if first {
			counter = rsp.PCRUpdateCounter
		} else if rsp.PCRUpdateCounter != counter {
			return nil, 0, false, nil
		}
		got := selected(rsp.PCRSelectionOut, bank)
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, 0, false, fmt.Errorf("tpmdev: PCR bank %v with PCRs %v is not available on this TPM", bank, rest)
		}
		for k, idx := range got {
			if len(values) >= len(indexes) || indexes[len(values)] != idx {
				return nil, 0, false, fmt.Errorf("tpmdev: TPM returned PCR %d out of order", idx)
			}
			values = append(values, rsp.PCRValues.Digests[k].Buffer)
		}
		rest = indexes[len(values):]
	}
	return values, counter, true, nil
}

// selected lists, ascending, the PCRs of bank that sel selects.
func selected(sel tpm2.TPMLPCRSelection, bank tpm2.TPMIAlgHash) []int {
	var out []int
	for _, s := range sel.PCRSelections {
		if s.Hash != bank {
			continue
		}
		for byteIdx, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) != 0 {
					out = append(out, byteIdx*8+bit)
				}
			}
		}
	}
	return out
}

// ExtendPCR extends PCR index of every bank with data (hashed per bank by
// the TPM, as TPM2_PCR_Event does). Tests and tooling use it to change a
// PCR; the agent never does.
func ExtendPCR(tpm transport.TPM, index int, data []byte) error {
	_, err := tpm2.PCREvent{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(index), Auth: tpm2.PasswordAuth(nil)},
		EventData: tpm2.TPM2BEvent{Buffer: data},
	}.Execute(tpm)
	if err != nil {
		return fmt.Errorf("tpmdev: extend PCR %d: %w", index, err)
	}
	return nil
}
