package txctl

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
)

func (o *options) reloadCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Reload the configuration of the node at --addr (as SIGHUP does)",
		Long: `Asks the node at --addr (configuration is per node: this is not forwarded to
the leader) to re-read its configuration file and apply what can change
without a restart: auth.tokens_file and auth.clients (who may do what, rate,
burst, max_active), coordinator.default_timeout, max_timeout, max_active,
max_statements, max_request_bytes, and log_level. Certificates reload by
themselves when their files change.

A configuration that does not validate is refused with the reason, and the
configuration in force stays. Both outcomes are written to the audit trail
(actions CONFIG_RELOAD and CONFIG_RELOAD_REFUSED) with the names of the
fields that changed and a digest, never a value or a secret.

Exit 0 when applied, 4 (refused) when the configuration does not validate, 1
when the node could not be reached.`,
		Example: `  txctl reload --addr 127.0.0.1:7400
  txctl reload -o json`,
		Args: cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			resp, err := c.ReloadConfig(ctx)
			if err != nil {
				return err
			}
			changed := resp.GetChanged()
			if changed == nil {
				changed = []string{}
			}
			if o.json() {
				return o.printJSON(map[string]any{"changed": changed, "digest": resp.GetDigest()})
			}
			if len(changed) == 0 {
				o.printf("reloaded: nothing changed (digest %s)\n", resp.GetDigest())
			} else {
				o.printf("reloaded: %s (digest %s)\n", strings.Join(changed, ", "), resp.GetDigest())
			}
			return nil
		}),
	}
}
