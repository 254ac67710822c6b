package attest_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/icn/icn-agent/attest"
)

// A verifier checks evidence it received for the nonce it sent, against
// the attestation key it pinned when it enrolled the machine. It needs no
// TPM.
func ExampleVerify() {
	data, err := os.ReadFile("../testdata/evidence/v1.json")
	if err != nil {
		log.Fatal(err)
	}
	var e attest.Evidence
	if err := json.Unmarshal(data, &e); err != nil {
		log.Fatal(err)
	}
	// The verifier's own records: the challenge it sent, the AK name it
	// pinned (icn-agent ak prints it) and the identity it expects.
	nonce := mustHex("../testdata/evidence/v1.nonce")
	akName := mustHex("../testdata/evidence/v1.ak-name")
	pub, err := os.ReadFile("../testdata/evidence/v1.pub")
	if err != nil {
		log.Fatal(err)
	}
	identity, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		log.Fatal(err)
	}

	res, err := attest.Verify(&e, attest.VerifyOptions{
		Nonce:         nonce,
		IdentityKey:   identity,
		TrustedAKName: akName,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("identity:", ssh.FingerprintSHA256(res.Identity) == ssh.FingerprintSHA256(identity))
	fmt.Println("pinned AK:", res.AKPinned)
	fmt.Println("sealed object certified:", res.Certified)
	fmt.Println("would unseal now:", res.SealedPolicyMatches)
	fmt.Printf("PCR 7: %x...\n", res.PCRs[7][:8])
	// Output:
	// identity: true
	// pinned AK: true
	// sealed object certified: true
	// would unseal now: true
	// PCR 7: 023ad6f5d3e46fd7...
}

func mustHex(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		log.Fatal(err)
	}
	return b
}
