package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/homelab-dev/homelab/internal/secrets"
	"github.com/homelab-dev/homelab/internal/talos/bootstrap"
)

func newKubeconfigCmd() *cobra.Command {
	var out string
	var merge bool
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the cluster's admin kubeconfig, or merge it into ~/.kube/config",
		Long: `kubeconfig reads the admin kubeconfig that the bootstrap stored, encrypted,
in the state folder, and prints it (it holds the admin's private key: print
it only where you mean to). With --out it writes a file (0600); with
--merge it adds the lab's cluster, user and context to your kubeconfig
($KUBECONFIG's first file, else ~/.kube/config), replacing entries of the
same names, and makes the lab's context current.`,
		Example: `  homelab kubeconfig --merge
  homelab kubeconfig --out lab.kubeconfig
  homelab kubeconfig > /dev/shm/kubeconfig`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := cmd.Flag("file").Value.String()
			stateDir := filepath.Join(filepath.Dir(path), secrets.StateDirName)
			store, err := secrets.Open(stateDir)
			if err != nil {
				return secretsError("opening the lab's secrets", err)
			}
			kc, err := store.GetFile(bootstrap.FileKubeconfig)
			if errors.Is(err, fs.ErrNotExist) {
				return withHint(fmt.Errorf("reading the kubeconfig: %s holds none yet", stateDir),
					"the kubeconfig is stored when the cluster is bootstrapped: run homelab apply")
			}
			if err != nil {
				return secretsError("reading the kubeconfig", err)
			}
			switch {
			case merge && out != "":
				return withHint(errors.New("--merge and --out together"), "use one of them")
			case merge:
				target, err := defaultKubeconfigPath()
				if err != nil {
					return err
				}
				name, err := mergeKubeconfig(target, kc)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "merged context %s into %s and made it current\n", name, target)
				return nil
			case out != "":
				if err := os.WriteFile(out, kc, 0o600); err != nil {
					return fmt.Errorf("writing the kubeconfig: %w", err)
				}
				if err := os.Chmod(out, 0o600); err != nil {
					return fmt.Errorf("writing the kubeconfig: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote the admin kubeconfig to %s (0600)\n", out)
				return nil
			default:
				_, err := cmd.OutOrStdout().Write(kc)
				return err
			}
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the kubeconfig to this file (0600) instead of printing it")
	cmd.Flags().BoolVar(&merge, "merge", false, "merge into $KUBECONFIG or ~/.kube/config and switch to the lab's context")
	return cmd
}

func defaultKubeconfigPath() (string, error) {
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return strings.Split(env, string(os.PathListSeparator))[0], nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", withHint(fmt.Errorf("finding your kubeconfig: %w", err), "set KUBECONFIG or use --out")
	}
	return filepath.Join(home, ".kube", "config"), nil
}

// mergeKubeconfig merges the lab's kubeconfig into the file at target:
// clusters, users and contexts of the same names are replaced, others
// kept, and the lab's context becomes current. It returns that context.
func mergeKubeconfig(target string, lab []byte) (string, error) {
	var add map[string]any
	if err := yaml.Unmarshal(lab, &add); err != nil || add == nil {
		return "", errors.New("merging the kubeconfig: the stored kubeconfig is not valid YAML")
	}
	dst := map[string]any{"apiVersion": "v1", "kind": "Config"}
	data, err := os.ReadFile(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("merging the kubeconfig: %w", err)
	default:
		if len(bytes.TrimSpace(data)) > 0 {
			if err := yaml.Unmarshal(data, &dst); err != nil || dst == nil {
				return "", withHint(fmt.Errorf("merging the kubeconfig: %s is not a kubeconfig", target), "use --out to write a file of its own")
			}
		}
	}
	for _, key := range []string{"clusters", "users", "contexts"} {
		dst[key] = mergeNamed(dst[key], add[key])
	}
	current, _ := add["current-context"].(string)
	if current == "" {
		return "", errors.New("merging the kubeconfig: the stored kubeconfig has no current context")
	}
	dst["current-context"] = current
	outData, err := yaml.Marshal(dst)
	if err != nil {
		return "", fmt.Errorf("merging the kubeconfig: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return "", fmt.Errorf("merging the kubeconfig: %w", err)
	}
	tmp := target + ".homelab.tmp"
	if err := os.WriteFile(tmp, outData, 0o600); err != nil {
		return "", fmt.Errorf("merging the kubeconfig: %w", err)
	}
	if err := os.Rename(tmp, target); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("merging the kubeconfig: %w", err)
	}
	return current, nil
}

// mergeNamed merges two kubeconfig lists of {name: ...} entries: entries
// of add replace those of the same name in base, order kept.
func mergeNamed(base, add any) []any {
	b, _ := base.([]any)
	a, _ := add.([]any)
	name := func(e any) string {
		m, _ := e.(map[string]any)
		s, _ := m["name"].(string)
		return s
	}
	out := make([]any, 0, len(b)+len(a))
	for _, e := range b {
		replaced := false
		for _, n := range a {
			if name(n) == name(e) {
				replaced = true
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	return append(out, a...)
}
