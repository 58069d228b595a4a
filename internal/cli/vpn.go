package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/mdp/qrterminal/v3"
	"github.com/spf13/cobra"
	"rsc.io/qr"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/spec"
	"github.com/homelab-dev/homelab/internal/vpn"
)

func newVPNCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vpn",
		Short: "Run the WireGuard endpoint and manage VPN peers",
		Long: `vpn runs the lab's WireGuard endpoint (userspace wireguard-go on a TUN
device) and manages the peers added outside lab.yaml.

The VPN is the only door to the admin network: clients get a split tunnel
that routes the admin network, and nothing else, through it.`,
	}
	cmd.AddCommand(newVPNRunCmd(), newVPNStatusCmd(), newVPNPeerCmd())
	return cmd
}

func newVPNRunCmd() *cobra.Command {
	var tunName, uapiSocket string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run a WireGuard endpoint from a wg-quick style config (server or client)",
		Long: `run creates the TUN device, gives it the config's addresses and routes
(each peer's AllowedIPs), and serves WireGuard in userspace until
interrupted; the device is removed on exit. It runs in the network
namespace it is started in: the local provider starts it inside the VPN
container's namespace (and a client config inside the vpn-client one).

A config whose peers have an Endpoint runs as a client, else as a server.
Needs root (CAP_NET_ADMIN).`,
		Example: `  homelab vpn run --config wireguard/server.conf
  homelab vpn run --config laptop.conf --tun wg1 --uapi-socket /run/homelab-wg1.sock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _ := cmd.Flags().GetString("config")
			if path == "" {
				return withHint(errors.New("running the vpn: no config"), "pass --config wireguard/server.conf (written by homelab render)")
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("running the vpn: %w", err)
			}
			cfg, err := vpn.Parse(data)
			if err != nil {
				return fmt.Errorf("running the vpn: reading %s:\n%w", path, err)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).With("component", "homelab-vpn")
			if os.Geteuid() != 0 {
				log.Warn("not root: creating the TUN device needs CAP_NET_ADMIN")
			}
			if vpn.IsClient(cfg) {
				return (&vpn.Client{Config: cfg, TunName: tunName, UAPISocket: uapiSocket, Logger: log}).Run(cmd.Context())
			}
			return (&vpn.Server{Config: cfg, TunName: tunName, UAPISocket: uapiSocket, Logger: log}).Run(cmd.Context())
		},
	}
	cmd.Flags().String("config", "", "wg-quick style config file (server.conf or a peer's)")
	cmd.Flags().StringVar(&tunName, "tun", vpn.DefaultTun, "TUN device name")
	cmd.Flags().StringVar(&uapiSocket, "uapi-socket", "", "serve wireguard's UAPI (status, as wg show) on this unix socket")
	return cmd
}

func newVPNStatusCmd() *cobra.Command {
	var sock, config string
	cmd := &cobra.Command{
		Use:     "status --uapi-socket PATH",
		Short:   "Show the peers of a running endpoint: handshakes and traffic (as wg show)",
		Example: `  homelab vpn status --uapi-socket /run/homelab-wg0.sock --config wireguard/server.conf`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sock == "" {
				return withHint(errors.New("reading vpn status: no UAPI socket"), "pass the --uapi-socket that homelab vpn run was started with")
			}
			names := map[vpn.Key]string{}
			if config != "" {
				data, err := os.ReadFile(config)
				if err != nil {
					return fmt.Errorf("reading vpn status: %w", err)
				}
				cfg, err := vpn.Parse(data)
				if err != nil {
					return fmt.Errorf("reading vpn status: reading %s:\n%w", config, err)
				}
				for _, p := range cfg.Peers {
					names[p.PublicKey] = p.Name
				}
			}
			peers, err := vpn.QueryUAPI(sock)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "PEER\tPUBLIC KEY\tENDPOINT\tHANDSHAKE\tRX\tTX")
			for _, p := range peers {
				hs := "never"
				if !p.LastHandshake.IsZero() {
					hs = time.Since(p.LastHandshake).Round(time.Second).String() + " ago"
				}
				ep := "-"
				if p.Endpoint.IsValid() {
					ep = p.Endpoint.String()
				}
				name := names[p.PublicKey]
				if name == "" {
					name = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", name, p.PublicKey, ep, hs, p.RxBytes, p.TxBytes)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&sock, "uapi-socket", "", "the UAPI socket of homelab vpn run")
	cmd.Flags().StringVar(&config, "config", "", "the endpoint's config, to name the peers")
	return cmd
}

func newVPNPeerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peer",
		Short: "Add, list and remove VPN peers kept in the state folder",
	}
	cmd.AddCommand(newVPNPeerAddCmd(), newVPNPeerListCmd(), newVPNPeerRemoveCmd())
	return cmd
}

// vpnLab loads the spec and the secrets and gathers what peer management
// needs.
func vpnLab(cmd *cobra.Command) (*labContext, *secrets.Store, vpn.LabInfo, error) {
	lc, err := loadLab(cmd)
	if err != nil {
		return nil, nil, vpn.LabInfo{}, err
	}
	store, err := secrets.Open(lc.stateDir())
	if err != nil {
		return nil, nil, vpn.LabInfo{}, fmt.Errorf("opening the state folder %s: %w", lc.stateDir(), err)
	}
	b, created, err := store.LoadOrCreate(lc.Lab)
	if err != nil {
		return nil, nil, vpn.LabInfo{}, fmt.Errorf("loading the lab's secrets: %w", err)
	}
	if created {
		fmt.Fprintf(cmd.ErrOrStderr(), "secrets: stored encrypted in %s (identity %s)\n", store.Dir(), store.IdentityFile())
	}
	serverPub, err := vpn.ParseKey(b.WireGuard.Server.Public)
	if err != nil {
		return nil, nil, vpn.LabInfo{}, fmt.Errorf("loading the vpn server key: %w", err)
	}
	admin, ok := lc.Lab.NetworkByRole(spec.RoleAdmin)
	if !ok {
		return nil, nil, vpn.LabInfo{}, errors.New("the lab has no admin network")
	}
	info := vpn.LabInfo{
		Tunnel:          lc.Lab.VPN.Tunnel,
		Server:          lc.Lab.VPNServerAddress(),
		SpecPeers:       map[string]netip.Addr{},
		ServerPublicKey: serverPub,
		Endpoint:        lc.Lab.VPN.Endpoint,
		Admin:           admin.CIDR,
		DNS:             lc.Lab.VPN.DNS,
	}
	for _, p := range lc.Lab.VPN.Peers {
		info.SpecPeers[p.Name] = p.Address
	}
	return lc, store, info, nil
}

func newVPNPeerAddCmd() *cobra.Command {
	var pngPath, out string
	var noQR bool
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a VPN peer: key pair, tunnel address, client config and QR code",
		Long: `add generates a key pair for a new peer, gives it the next free tunnel
address, keeps both encrypted in the state folder, and writes the peer's
client config (mode 0600; a split tunnel routing only the admin network).
It prints the config as a QR code for the WireGuard mobile app, and saves
it as a PNG with --png. The QR code and the file hold the peer's private
key: treat them as secrets.

The server learns the new peer on the next homelab apply.`,
		Example: `  homelab vpn peer add phone
  homelab vpn peer add tablet --png tablet.png --no-qr`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lc, store, info, err := vpnLab(cmd)
			if err != nil {
				return err
			}
			p, err := vpn.AddPeer(store, info, args[0], time.Now())
			if err != nil {
				return err
			}
			conf := vpn.ClientConfig(info, p).Marshal(
				"homelab VPN client config for peer "+p.Name+" of lab "+lc.Lab.Name,
				"Split tunnel: only the admin network goes through the VPN.",
				"Import it in the WireGuard app, or: wg-quick up ./"+p.Name+".conf",
			)
			if out == "" {
				out = filepath.Join(lc.Dir, p.Name+".conf")
			}
			if err := writeSecretFile(out, conf); err != nil {
				return fmt.Errorf("writing the client config: %w", err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "added vpn peer %s with tunnel address %s\n", p.Name, p.Address)
			fmt.Fprintf(w, "client config: %s (secret: it holds the peer's private key)\n", out)
			if pngPath != "" {
				code, err := qr.Encode(string(conf), qr.M)
				if err != nil {
					return fmt.Errorf("making the QR code: %w", err)
				}
				if err := writeSecretFile(pngPath, code.PNG()); err != nil {
					return fmt.Errorf("writing the QR code: %w", err)
				}
				fmt.Fprintf(w, "QR code: %s\n", pngPath)
			}
			if !noQR {
				fmt.Fprintln(w, "scan with the WireGuard app:")
				qrterminal.GenerateHalfBlock(string(conf), qrterminal.M, w)
			}
			fmt.Fprintln(w, "next: run homelab apply to push the new peer to the vpn server")
			return nil
		},
	}
	cmd.Flags().StringVar(&pngPath, "png", "", "also save the QR code as a PNG file")
	cmd.Flags().StringVarP(&out, "output", "o", "", "client config path (default NAME.conf beside lab.yaml)")
	cmd.Flags().BoolVar(&noQR, "no-qr", false, "do not print the QR code")
	return cmd
}

func newVPNPeerListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the VPN peers: those of lab.yaml and those added with peer add",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lc, store, _, err := vpnLab(cmd)
			if err != nil {
				return err
			}
			added, err := vpn.ListPeers(store)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tADDRESS\tFROM\tADDED")
			for _, p := range lc.Lab.VPN.Peers {
				fmt.Fprintf(tw, "%s\t%s\tlab.yaml\t-\n", p.Name, p.Address)
			}
			for _, p := range added {
				fmt.Fprintf(tw, "%s\t%s\tpeer add\t%s\n", p.Name, p.Address, p.Created.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
}

func newVPNPeerRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a VPN peer added with peer add",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, store, info, err := vpnLab(cmd)
			if err != nil {
				return err
			}
			if err := vpn.RemovePeer(store, info, args[0]); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "removed vpn peer %s\n", args[0])
			fmt.Fprintln(w, "next: run homelab apply to remove it from the vpn server")
			return nil
		},
	}
}

// writeSecretFile writes data 0600, tightening an existing file first.
func writeSecretFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}
