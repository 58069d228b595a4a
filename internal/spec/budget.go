package spec

import (
	"fmt"
	"strings"
)

// Resources is an amount of cores, memory and disk.
type Resources struct {
	Cores  int
	Memory Size
	Disk   Size
}

// BudgetLine is one guest in the budget.
type BudgetLine struct {
	Name string
	Role MachineRole
	Kind GuestKind
	Resources
}

// Budget is the lab's capacity plan: every guest against the host minus the
// hypervisor's reserve.
type Budget struct {
	Guests    []BudgetLine
	Used      Resources // sum over guests
	Host      Resources // the whole machine
	Reserve   Resources // kept for the hypervisor
	Available Resources // Host minus Reserve
}

// Budget computes the capacity plan of a loaded lab.
func (l *Lab) Budget() Budget {
	b := Budget{
		Host:    Resources{l.Host.Cores, l.Host.Memory, l.Host.Disk},
		Reserve: Resources{l.Host.Reserve.Cores, l.Host.Reserve.Memory, l.Host.Reserve.Disk},
	}
	b.Available = Resources{
		Cores:  max(0, b.Host.Cores-b.Reserve.Cores),
		Memory: subSize(b.Host.Memory, b.Reserve.Memory),
		Disk:   subSize(b.Host.Disk, b.Reserve.Disk),
	}
	for _, m := range l.Machines() {
		b.Guests = append(b.Guests, BudgetLine{Name: m.Name, Role: m.Role, Kind: m.Kind, Resources: Resources{m.Cores, m.Memory, m.Disk}})
		b.Used.Cores += m.Cores
		b.Used.Memory = addSize(b.Used.Memory, m.Memory)
		b.Used.Disk = addSize(b.Used.Disk, m.Disk)
	}
	return b
}

// addSize adds without wrapping around: absurd sizes must not look small.
func addSize(a, b Size) Size {
	if a+b < a {
		return ^Size(0)
	}
	return a + b
}

func subSize(a, b Size) Size {
	if b >= a {
		return 0
	}
	return a - b
}

// Fits reports whether memory and disk fit in what is available (cores may
// be overcommitted).
func (b Budget) Fits() bool {
	return b.Used.Memory <= b.Available.Memory && b.Used.Disk <= b.Available.Disk
}

// Table renders the budget as an aligned text table: each guest, the total,
// the host, the reserve, what is available to guests and what is left.
func (b Budget) Table() string {
	rows := [][]string{{"GUEST", "KIND", "CORES", "MEMORY", "DISK"}}
	for _, g := range b.Guests {
		rows = append(rows, []string{g.Name, string(g.Kind), fmt.Sprint(g.Cores), human(g.Memory), human(g.Disk)})
	}
	rows = append(rows, nil,
		[]string{"total guests", "", fmt.Sprint(b.Used.Cores), human(b.Used.Memory), human(b.Used.Disk)},
		[]string{"host", "", fmt.Sprint(b.Host.Cores), human(b.Host.Memory), human(b.Host.Disk)},
		[]string{"reserve (hypervisor)", "", fmt.Sprint(b.Reserve.Cores), human(b.Reserve.Memory), human(b.Reserve.Disk)},
		[]string{"available to guests", "", fmt.Sprint(b.Available.Cores), human(b.Available.Memory), human(b.Available.Disk)},
		[]string{"free", "", coresLeft(b), left(b.Available.Memory, b.Used.Memory), left(b.Available.Disk, b.Used.Disk)},
	)
	width := make([]int, 5)
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	var sb strings.Builder
	for _, r := range rows {
		if r == nil {
			sb.WriteString("\n")
			continue
		}
		// Names and kinds left-aligned, numbers right-aligned.
		line := fmt.Sprintf("%-*s  %-*s  %*s  %*s  %*s", width[0], r[0], width[1], r[1], width[2], r[2], width[3], r[3], width[4], r[4])
		sb.WriteString(strings.TrimRight(line, " "))
		sb.WriteString("\n")
	}
	return sb.String()
}

// human writes a size with one decimal in the largest fitting unit.
func human(s Size) string {
	switch {
	case s >= TiB && s%TiB != 0:
		return fmt.Sprintf("%.1fTiB", float64(s)/float64(TiB))
	case s >= GiB && s%GiB != 0:
		return fmt.Sprintf("%.1fGiB", float64(s)/float64(GiB))
	case s >= MiB && s%MiB != 0:
		return fmt.Sprintf("%.1fMiB", float64(s)/float64(MiB))
	}
	return s.String()
}

func left(avail, used Size) string {
	if used > avail {
		return "-" + human(used-avail) + " OVER"
	}
	return human(avail - used)
}

func coresLeft(b Budget) string {
	if b.Available.Cores == 0 {
		return "-"
	}
	ratio := float64(b.Used.Cores) / float64(b.Available.Cores)
	if b.Used.Cores <= b.Available.Cores {
		return fmt.Sprintf("%d", b.Available.Cores-b.Used.Cores)
	}
	return fmt.Sprintf("%.2fx shared", ratio)
}
