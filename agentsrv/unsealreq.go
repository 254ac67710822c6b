package agentsrv

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/icn/icn-agent/sealstore"
)

// PINUnsealer is an Unsealer that can also unseal with a PIN the client
// sent in the unseal@icn-agent request (icn-agent add on a terminal or
// with --pin-file), instead of asking for one itself.
//
// pin is a slice of the connection's locked request buffer, valid only
// during the call and wiped afterwards: implementations must not keep it,
// copy it into a string, or let it escape to another goroutine that
// outlives the call. For an identity without a PIN it is ignored.
type PINUnsealer interface {
	Unsealer
	UnsealWithPIN(ctx context.Context, b *sealstore.Blob, pin, dst []byte) error
}

// ErrPINUnsupported is returned (wrapped) for an unseal request carrying
// a PIN when the server's Unsealer is not a PINUnsealer.
var ErrPINUnsupported = errors.New("agentsrv: this agent cannot take a PIN from its client")

// Flags of an unseal@icn-agent request.
const (
	// UnsealConfirm makes every signature with the identity ask for
	// confirmation (icn-agent add -c), until an unseal request without
	// it.
	UnsealConfirm = 1 << 0
)

// MaxPIN bounds the PIN an unseal request may carry.
const MaxPIN = 1024

// UnsealOptions are the optional parts of an unseal@icn-agent request.
type UnsealOptions struct {
	// Lifetime is how long the seed stays cached; zero means the
	// agent's auto-lock timeout.
	Lifetime time.Duration
	// Confirm sets UnsealConfirm.
	Confirm bool
	// PIN is the identity's PIN, or nil.
	PIN []byte
	// Destinations restrict the identity's use (icn-agent add -h) until
	// an unseal request without them; see ParseDestinations.
	Destinations []DestinationConstraint
}

// MarshalUnsealRequest encodes an unseal@icn-agent request:
//
//	string  name
//	uint32  lifetime in seconds (0: the agent's default)
//	[uint32 flags (UnsealConfirm)
//	 string PIN (empty: none)
//	 [string destination constraints, as in restrict-destination-v00]]
//
// The bracketed fields, added later, are sent only when a flag or a PIN
// is given, so that the request stays readable by agents that predate
// them. The caller should wipe the result when it carries a PIN.
func MarshalUnsealRequest(name string, o UnsealOptions) ([]byte, error) {
	if o.Lifetime < 0 {
		return nil, fmt.Errorf("agentsrv: negative lifetime %v", o.Lifetime)
	}
	secs := (o.Lifetime + time.Second - 1) / time.Second
	if secs > math.MaxUint32 {
		return nil, fmt.Errorf("agentsrv: lifetime %v too long", o.Lifetime)
	}
	if len(o.PIN) > MaxPIN {
		return nil, fmt.Errorf("agentsrv: PIN longer than %d bytes", MaxPIN)
	}
	var b cryptobyte.Builder
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(name)) })
	b.AddUint32(uint32(secs))
	if o.Confirm || o.PIN != nil || o.Destinations != nil {
		var flags uint32
		if o.Confirm {
			flags |= UnsealConfirm
		}
		b.AddUint32(flags)
		b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(o.PIN) })
		if o.Destinations != nil {
			b.AddBytes(MarshalDestinationConstraints(o.Destinations))
		}
	}
	return b.Bytes()
}

// parsedUnseal is an unseal request parsed in place: name and pin are
// slices of the request.
type parsedUnseal struct {
	name  []byte
	life  uint32
	flags uint32
	pin   []byte // nil: none
	dest  []destConstraint
}

// parseUnsealRequest parses MarshalUnsealRequest's encoding without
// copying anything.
func parseUnsealRequest(contents []byte) (parsedUnseal, bool) {
	var r parsedUnseal
	in := cryptobyte.String(contents)
	if !readString(&in, &r.name) || !in.ReadUint32(&r.life) {
		return r, false
	}
	if in.Empty() {
		return r, true
	}
	var pin []byte
	if !in.ReadUint32(&r.flags) || !readString(&in, &pin) || len(pin) > MaxPIN {
		return r, false
	}
	if !in.Empty() {
		dest, err := parseDestConstraints(&in)
		if err != nil || !in.Empty() {
			return r, false
		}
		r.dest = dest
	}
	if len(pin) > 0 {
		r.pin = pin
	}
	return r, true
}
