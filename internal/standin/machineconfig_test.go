package standin

import (
	"strings"
	"testing"
)

func TestImageTag(t *testing.T) {
	tests := []struct{ image, want string }{
		{"ghcr.io/siderolabs/kubelet:v1.36.3", "v1.36.3"},
		{"registry.k8s.io/kube-apiserver:v1.36.4@sha256:abc", "v1.36.4"},
		{"localhost:5000/kubelet", ""},
		{"localhost:5000/kubelet:v1", "v1"},
		{"kubelet", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := imageTag(tt.image); got != tt.want {
			t.Errorf("imageTag(%q) = %q, want %q", tt.image, got, tt.want)
		}
	}
}

// schematicQemuGuestAgent is the Image Factory schematic ID of the
// reference lab (cluster.extensions: [siderolabs/qemu-guest-agent]):
// the SHA-256 of
//
//	customization:
//	    systemExtensions:
//	        officialExtensions:
//	            - siderolabs/qemu-guest-agent
//
// computed once with talos.Schematic on spec.Reference and pasted here
// (it is also the ID factory.talos.dev answers for that schematic).
const schematicQemuGuestAgent = "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"

func TestImageSchematic(t *testing.T) {
	id := schematicQemuGuestAgent
	tests := []struct{ image, want string }{
		{"factory.talos.dev/installer/" + id + ":v1.13.9", id},
		{"factory.talos.dev/nocloud-installer/" + id + ":v1.13.10", id},
		{"factory.talos.dev/installer/" + id + ":v1.13.9@sha256:0123", id},
		{"factory.talos.dev/installer/" + id, id},
		{"ghcr.io/siderolabs/installer:v1.13.9", ""},
		{"factory.talos.dev/installer/abc123:v1.13.9", ""},
		{"factory.talos.dev/image/" + id + ":v1.13.9", ""},
		{"factory.talos.dev/installer/" + strings.ToUpper(id) + ":v1.13.9", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := ImageSchematic(tt.image); got != tt.want {
			t.Errorf("ImageSchematic(%q) = %q, want %q", tt.image, got, tt.want)
		}
	}
}

func TestParseMachineConfig(t *testing.T) {
	b := labBundle(t)
	ac, err := parseMachineConfig(labConfig(t, b, true, "1.36.3"))
	if err != nil {
		t.Fatal(err)
	}
	if string(ac.machineCA) != string(b.Certs.OS.Crt) || len(ac.machineCAKey) == 0 || string(ac.clusterCA) != string(b.Certs.K8s.Crt) {
		t.Error("a control plane's config: machine.ca or cluster.ca not read")
	}
	if ac.installImage != labInstaller {
		t.Errorf("install image %q, want %q", ac.installImage, labInstaller)
	}
	if imageTag(ac.kubeletImage) != "v1.36.3" || imageTag(ac.apiServerImage) != "v1.36.3" || ac.endpointHost != "127.0.0.1" || ac.machineToken == "" {
		t.Errorf("read kubelet %q, apiserver %q, endpoint host %q", ac.kubeletImage, ac.apiServerImage, ac.endpointHost)
	}
	w, err := parseMachineConfig(labConfig(t, b, false, "1.36.3"))
	if err != nil {
		t.Fatal(err)
	}
	if len(w.machineCA) == 0 || len(w.machineCAKey) != 0 || w.apiServerImage != "" {
		t.Errorf("a worker's config: machine.ca %d bytes, key %d bytes, apiserver %q; want the certificate only and no apiserver", len(w.machineCA), len(w.machineCAKey), w.apiServerImage)
	}
}

// FuzzParseMachineConfig feeds the loader what a client may send to
// ApplyConfiguration: it must not panic, and its errors never quote key
// material.
func FuzzParseMachineConfig(f *testing.F) {
	f.Add([]byte("version: v1alpha1\nmachine:\n  type: worker\n"))
	f.Add([]byte("version: v1alpha1\nmachine:\n  ca:\n    crt: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t\n"))
	f.Add([]byte("apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: x\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := parseMachineConfig(data)
		if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("error quotes key material: %v", err)
		}
	})
}
