package main

import "github.com/icn/icn-agent/attest"

// policyDescription names an identity's policy kind for people.
func policyDescription(kind attest.PolicyKind, pin bool) string { return kind.Describe(pin) }
