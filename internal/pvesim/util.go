package pvesim

import "strconv"

func itoa(n int) string { return strconv.Itoa(n) }

func atoiOr(s string, d int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return d
	}
	return n
}

// memBytes is a guest's configured memory in bytes (MiB in the config).
func memBytes(g *Guest) int64 {
	def := 2048
	if g.Type == "lxc" {
		def = 512
	}
	return int64(atoiOr(g.Config["memory"], def)) << 20
}
