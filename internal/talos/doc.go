// Package talos builds what a Talos Linux cluster needs from the lab spec:
// machine configs and the talosconfig (with machinery's own generator and
// validation), and the Image Factory schematic, installer image and nocloud
// disk image of the lab's system extensions.
package talos
