// Package buildinfo says which build a binary is: its module version, Go
// release and commit, as both binaries print them for --version.
package buildinfo

import "runtime/debug"

// String is "NAME VERSION (GO, commit REVISION)", e.g.
// "authguard v0.1.0 (go1.26.8, commit 1c2e593...)"; parts the build did not
// record read "unknown".
func String(name string) string {
	version, goVersion, rev := "unknown", "unknown", "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		version, goVersion = orUnknown(info.Main.Version), info.GoVersion
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				rev = orUnknown(s.Value)
			}
		}
	}
	return name + " " + version + " (" + goVersion + ", commit " + rev + ")"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
