package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

var symbols = map[Action]string{Create: "+", Update: "~", Replace: "-/+", Delete: "-"}

// Counts returns how many steps of each action the plan has.
func (p *Plan) Counts() map[Action]int {
	c := map[Action]int{}
	for _, s := range p.Steps {
		c[s.Action]++
	}
	return c
}

// Summary is one line: "3 to create, 1 to update, 0 to replace, 2 to delete, 9 unchanged".
func (p *Plan) Summary() string {
	c := p.Counts()
	return fmt.Sprintf("%d to create, %d to update, %d to replace, %d to delete, %d unchanged",
		c[Create], c[Update], c[Replace], c[Delete], p.Unchanged)
}

// Print writes the plan for people, in the spirit of terraform plan:
// one block per step with its attribute changes.
func (p *Plan) Print(w io.Writer) error {
	var b strings.Builder
	if p.Empty() {
		fmt.Fprintf(&b, "No changes: the lab matches the spec (%d resources).\n", p.Unchanged)
		_, err := io.WriteString(w, b.String())
		return err
	}
	for _, s := range p.Steps {
		fmt.Fprintf(&b, "%3s %s", symbols[s.Action], s.ID)
		switch s.Action {
		case Update:
			b.WriteString("  (in place)")
		case Replace:
			fmt.Fprintf(&b, "  (replace: %s)", s.Reason)
		}
		b.WriteString("\n")
		switch s.Action {
		case Create:
			r := s.Desired
			for _, k := range sortedKeys(r.Attrs) {
				fmt.Fprintf(&b, "      %s = %s\n", k, quote(r.Attrs[k]))
			}
		case Update, Replace:
			for _, c := range s.Changes {
				mark := ""
				if c.ForceNew {
					mark = "  # forces replacement"
				}
				fmt.Fprintf(&b, "      %s: %s -> %s%s\n", c.Key, quote(c.Observed), quote(c.Desired), mark)
			}
		}
		if s.Blocked != "" {
			fmt.Fprintf(&b, "      ! blocked: %s\n", s.Blocked)
		}
	}
	fmt.Fprintf(&b, "\nPlan: %s.\n", p.Summary())
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the plan as indented JSON for tools.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if p.Steps == nil {
		p.Steps = []Step{}
	}
	return enc.Encode(p)
}

func quote(s string) string {
	if s == "" {
		return `""`
	}
	if strings.ContainsAny(s, " \t\n\"") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
