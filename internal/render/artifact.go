package render

// Artifact is one rendered file, relative to the render output folder.
type Artifact struct {
	// Path is slash-separated, relative (for example talos/lab-cp-1.yaml).
	Path string
	Data []byte
	// Secret marks files that carry secret material: written 0600 in 0700
	// folders, never printed.
	Secret bool
}
