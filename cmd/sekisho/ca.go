package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sekisho/sekisho/proxy/mitm"
)

const caUsage = `Usage:
  sekisho ca init --dir DIR --org NAME   create the interception CA (ECDSA P-256, 10 years; key 0600)
  sekisho ca export [--dir DIR | --config FILE] [--format pem|der] [--out FILE]
                                         write the CA certificate, to roll out to PCs and phones
  sekisho ca show [--dir DIR | --config FILE]
                                         print the CA's subject, validity and SHA-256 fingerprint

TLS interception is on when sekisho.yaml names the CA directory:
  tls:
    ca_dir: /etc/sekisho/ca
and the rules' "inspection" section decides which destinations are opened.
`

func cmdCA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" || args[0] == "help" {
		fmt.Fprint(stderr, caUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "init":
		return caInit(args[1:], stdout, stderr)
	case "export":
		return caExport(args[1:], stdout, stderr)
	case "show":
		return caShow(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "sekisho ca: unknown command %q\n\n%s", args[0], caUsage)
	return 2
}

func caInit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ca init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory for ca.crt and ca.key (created if missing)")
	org := fs.String("org", "", `organisation named in the certificate, such as "Example City Hall"`)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sekisho ca init --dir DIR --org NAME\n\nCreates the CA that signs intercepted connections' certificates. Its key is\nwritten 0600: keep it readable by the user sekisho runs as only.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage(err)
	}
	if *dir == "" || *org == "" {
		fs.Usage()
		return 2
	}
	ca, err := mitm.InitCA(*dir, *org, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "sekisho ca init: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "created %s/%s and %s/%s (key mode 0600)\n", *dir, mitm.CertFile, *dir, mitm.KeyFile)
	printCA(stdout, ca.Cert)
	fmt.Fprintf(stdout, `
Next:
  1. Roll the certificate out to staff PCs and phones as a trusted root
     (sekisho ca export --dir %s --format der --out sekisho-ca.cer).
  2. In sekisho.yaml:  tls: {ca_dir: %s}
  3. In the rules, an "inspection" section says which destinations to open.
`, *dir, *dir)
	return 0
}

// caDir finds the CA directory from --dir or the config's tls.ca_dir.
func caDir(fs *flag.FlagSet, args []string, stderr io.Writer) (string, error) {
	dir := fs.String("dir", "", "CA directory")
	configPath := fs.String("config", "", "configuration file whose tls.ca_dir to use")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if *dir != "" {
		return *dir, nil
	}
	if *configPath != "" {
		cfg, err := loadConfig(*configPath)
		if err != nil {
			return "", err
		}
		if cfg.TLS.CADir == "" {
			return "", fmt.Errorf("%s has no tls.ca_dir", *configPath)
		}
		return cfg.TLS.CADir, nil
	}
	fs.Usage()
	return "", errors.New("give --dir or --config")
}

func caExport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ca export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "pem", "pem (Linux, Firefox, macOS) or der (Windows .cer, Android)")
	out := fs.String("out", "", "file to write (default: standard output)")
	dir, err := caDir(fs, args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "sekisho ca export: %v\n", err)
		return 2
	}
	cert, err := readCACert(dir)
	if err != nil {
		fmt.Fprintf(stderr, "sekisho ca export: %v\n", err)
		return 1
	}
	var data []byte
	switch *format {
	case "pem":
		data = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	case "der":
		data = cert.Raw
	default:
		fmt.Fprintf(stderr, "sekisho ca export: --format %q: use pem or der\n", *format)
		return 2
	}
	if *out == "" {
		_, _ = stdout.Write(data)
		return 0
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		fmt.Fprintf(stderr, "sekisho ca export: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s (%s)\n", *out, *format)
	return 0
}

func caShow(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ca show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir, err := caDir(fs, args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "sekisho ca show: %v\n", err)
		return 2
	}
	cert, err := readCACert(dir)
	if err != nil {
		fmt.Fprintf(stderr, "sekisho ca show: %v\n", err)
		return 1
	}
	printCA(stdout, cert)
	return 0
}

// readCACert reads only the certificate: exporting it needs no access to
// the key.
func readCACert(dir string) (*x509.Certificate, error) {
	path := dir + "/" + mitm.CertFile
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return x509.ParseCertificate(b.Bytes)
}

func printCA(w io.Writer, cert *x509.Certificate) {
	ca := &mitm.CA{Cert: cert}
	fmt.Fprintf(w, "subject      %s\n", cert.Subject)
	fmt.Fprintf(w, "valid        %s to %s\n", cert.NotBefore.Format(time.DateOnly), cert.NotAfter.Format(time.DateOnly))
	fmt.Fprintf(w, "SHA-256      %s\n", ca.Fingerprint())
}
