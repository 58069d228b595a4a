//go:build race

package standin

// raceEnabled: the race detector multiplies memory use, so TestMemory
// only reports under it.
const raceEnabled = true
