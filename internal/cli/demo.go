package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/homelab-dev/homelab/internal/provider/local"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/verify"
)

func newDemoCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build the reference lab on this machine, verify it and show you around (root)",
		Long: `demo writes the reference lab.yaml for the local provider into a folder,
builds it on this Linux machine with network namespaces (the same as
'homelab apply'), checks it with real packets ('homelab verify') and prints
a short tour: the app through the load balancer from the Internet side, the
Kubernetes API through the VPN, the same API refused without the VPN, and
how to destroy the lab.

The Talos nodes of the local lab are stand-ins (homelab standin): they serve
the ports a Talos node serves, they are not Talos. Run demo again at any
time: it converges, and it keeps an existing lab.yaml in the folder.

demo needs root: it creates network namespaces, links and nftables rules.`,
		Example: `  sudo homelab demo
  sudo homelab demo --dir /tmp/lab`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := local.CheckPrivileges(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			file := filepath.Join(dir, "lab.yaml")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return withHint(fmt.Errorf("creating the demo folder: %w", err), "choose another folder with --dir")
			}
			switch _, err := os.Stat(file); {
			case errors.Is(err, fs.ErrNotExist):
				if err := os.WriteFile(file, spec.Reference(spec.ProviderLocal), 0o644); err != nil {
					return fmt.Errorf("writing the reference lab: %w", err)
				}
				fmt.Fprintf(out, "Wrote the reference lab to %s (read it: every section is explained).\n\n", file)
			case err != nil:
				return fmt.Errorf("reading %s: %w", file, err)
			default:
				fmt.Fprintf(out, "Using the existing %s.\n\n", file)
			}
			if err := cmd.Root().PersistentFlags().Set("file", file); err != nil {
				return err
			}
			lc, err := loadLab(cmd)
			if err != nil {
				return err
			}
			if lc.Lab.Host.Provider != spec.ProviderLocal {
				return withHint(fmt.Errorf("%s is not a local lab (provider %s)", file, lc.Lab.Host.Provider), "use another --dir, or 'homelab apply' for that lab")
			}
			t0 := time.Now()
			if err := runApply(cmd.Context(), cmd, providerFlags{}, false, false); err != nil {
				return err
			}
			fmt.Fprintln(out)
			rep, verr := verify.Run(cmd.Context(), lc.Lab, verify.Options{})
			if rep != nil && len(rep.Probes) > 0 {
				rep.Print(out)
			}
			fmt.Fprintln(out)
			if err := tour(out, lc.Lab, file); err != nil {
				return err
			}
			fmt.Fprintf(out, "\n(demo built and verified the lab in %s)\n", time.Since(t0).Round(time.Millisecond))
			var mm *verify.MismatchError
			if errors.As(verr, &mm) {
				return &exitError{code: exitMismatch, err: verr}
			}
			return verr
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "homelab-demo", "folder for the demo's lab.yaml and state")
	return cmd
}

// tour prints the commands that show the lab's architecture at work.
func tour(w io.Writer, lab *spec.Lab, file string) error {
	t, err := local.TopologyOf(lab)
	if err != nil {
		return err
	}
	lb, _ := t.Guest(spec.MachineLB, 0)
	cp, _ := t.Guest(spec.MachineControlPlane, 0)
	if lb == nil || cp == nil {
		return nil
	}
	lbWAN, _ := lb.Machine.Address(spec.RoleWAN)
	cpAdmin, _ := cp.Machine.Address(spec.RoleAdmin)
	peer := "a VPN peer"
	for _, p := range lab.VPN.Peers {
		if p.PublicKey == "" {
			peer = "VPN peer " + p.Name
			break
		}
	}
	f := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	f("The lab %q runs on this machine in network namespaces (ip netns list).", lab.Name)
	f("The Talos nodes are stand-ins (homelab standin): they serve a node's ports, they are not Talos.")
	f("")
	f("1. The app through the load balancer, from the Internet side (the %s namespace):", t.InternetNS)
	f("     sudo ip netns exec %s curl http://%s/", t.InternetNS, lbWAN)
	f("   A worker stand-in answers; it names itself and the client address it saw")
	f("   (%s), carried by the PROXY protocol. Run it twice: the LB balances.", t.InternetAddr.Addr())
	f("")
	f("2. The Kubernetes API stand-in on the admin network, through the WireGuard VPN")
	f("   (%s, from the %s namespace):", peer, t.ClientNS)
	f("     sudo ip netns exec %s curl -sk https://%s:6443/version", t.ClientNS, cpAdmin)
	f("   It answers 401 (no client certificate): the API was reached through the tunnel.")
	f("")
	f("3. The same API without the VPN, from the Internet side: the host's firewall drops it.")
	f("     sudo ip netns exec %s curl -sk --max-time 3 https://%s:6443/version", t.InternetNS, cpAdmin)
	f("   It times out.")
	f("")
	f("4. Look around:")
	f("     sudo homelab status -f %s       guests, addresses, daemons, LB backend health", file)
	f("     sudo homelab verify -f %s       the reachability matrix again", file)
	f("     sudo ip netns exec %s nft list ruleset   the host's firewall", t.HostNS)
	f("")
	f("5. Tear it all down (namespaces, links, rulesets, processes):")
	f("     sudo homelab destroy -f %s --yes", file)
	f("")
	f("Edit %s and run 'sudo homelab apply -f %s' to change the lab.", file, file)
	return nil
}
