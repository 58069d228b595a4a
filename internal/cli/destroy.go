package cli

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newDestroyCmd() *cobra.Command {
	var (
		pf  providerFlags
		yes bool
	)
	cmd := &cobra.Command{
		Use:   "destroy",
		Short: "Remove everything the lab owns from the target",
		Long: `destroy removes exactly the objects this lab owns (found by its marks), in
reverse dependency order, and nothing else. It prints the plan first and
asks you to type the lab's name, unless --yes is given or standard input is
not a terminal (then --yes is required). Afterwards it says what it left on
purpose (for example downloaded images on Proxmox).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			t0 := time.Now()
			r, err := makePlan(ctx, cmd, pf, true, true)
			if err != nil {
				return err
			}
			defer r.close()
			p, prov := r.plan, r.prov
			out := cmd.OutOrStdout()
			if p.Empty() {
				fmt.Fprintln(out, "Nothing to destroy: the target holds nothing this lab owns.")
				return keptNote(ctx, cmd, prov, true)
			}
			if err := p.Print(out); err != nil {
				return err
			}
			if !yes {
				lc := r.lab
				if !term.IsTerminal(int(os.Stdin.Fd())) {
					return withHint(fmt.Errorf("refusing to destroy lab %q without confirmation", lc.Lab.Name), "pass --yes to destroy without a prompt")
				}
				fmt.Fprintf(out, "\nType the lab's name (%s) to destroy it: ", lc.Lab.Name)
				line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if strings.TrimSpace(line) != lc.Lab.Name {
					return fmt.Errorf("destroy cancelled: the name did not match")
				}
			}
			return execute(ctx, cmd, r, pf, true, t0)
		},
	}
	pf.register(cmd)
	cmd.Flags().BoolVar(&pf.purgeImages, "purge-images", false, "proxmox: also delete the downloaded images and templates")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
