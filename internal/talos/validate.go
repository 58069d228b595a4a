package talos

import (
	"errors"
	"fmt"

	"github.com/siderolabs/talos/pkg/machinery/config/configloader"
)

// metal is the runtime mode of a Talos node installed on a (virtual)
// machine's disk, the mode the lab's nodes run in.
type metal struct{}

func (metal) String() string        { return "metal" }
func (metal) RequiresInstall() bool { return true }
func (metal) InContainer() bool     { return false }

// Validate loads a machine config with machinery's strict loader and runs
// machinery's own validation for the metal runtime mode, in strict mode so
// that warnings count too. It returns every problem found, joined.
// Validation messages name fields, not their values (the loader may quote
// unknown keys it rejects).
func Validate(data []byte) error {
	cfg, err := configloader.NewFromBytes(data)
	if err != nil {
		return fmt.Errorf("loading talos machine config: %w", err)
	}
	warnings, err := cfg.Validate(metal{})
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, w := range warnings {
		errs = append(errs, fmt.Errorf("warning: %s", w))
	}
	if len(errs) > 0 {
		return fmt.Errorf("validating talos machine config: %w", errors.Join(errs...))
	}
	return nil
}
