package proxmox

// Privileges is what the API token needs, granted on / (docs/proxmox.md
// gives the pveum commands). The contract tests apply and destroy the
// reference lab with a token holding exactly these.
var Privileges = []string{
	"Datastore.Allocate",         // delete downloaded images and snippets (destroy)
	"Datastore.AllocateSpace",    // guest disks
	"Datastore.AllocateTemplate", // download-url, aplinfo
	"Datastore.Audit",            // list storages and their content
	"SDN.Use",                    // attach NICs to the bridges
	"Sys.Audit",                  // read the node network, the firewall
	"Sys.Modify",                 // bridges, network reload, cluster firewall groups and IP sets, download-url
	"VM.Allocate",                // create and delete guests
	"VM.Audit",                   // read guests
	"VM.Config.CDROM",            // the cloud-init drive
	"VM.Config.CPU",
	"VM.Config.Cloudinit",
	"VM.Config.Disk",
	"VM.Config.HWType",
	"VM.Config.Memory",
	"VM.Config.Network", // NICs and the guest firewall
	"VM.Config.Options",
	"VM.GuestAgent.Audit", // ping the guest agent (PVE 9; on PVE 8 VM.Monitor)
	"VM.PowerMgmt",        // start and stop
}
