// Package spec owns lab.yaml: its Go types (the schema), strict loading with
// file:line:col messages, defaults and address assignment, and validation
// (errors and warnings, including the capacity budget and the security
// policy). Everything downstream works from a *Lab that went through Load.
package spec
