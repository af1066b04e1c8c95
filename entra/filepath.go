package entra

import (
	"errors"
	"io/fs"
	"strings"
	"syscall"
)

// CheckFilePath returns a *ConfigError for field if path is not a file
// path but what a file holds: a line break, PEM ("-----BEGIN"), a JWT
// (three base64url parts and no slash) or more than 4096 bytes. A
// {file.*} placeholder gives a file's content, so giving one (or a
// variable holding the content) where a path belongs would put a private
// key or a federated token into every error that names the path. The
// error quotes none of the value.
func CheckFilePath(field, path string) error {
	if !looksLikeContent(path) {
		return nil
	}
	return &ConfigError{Field: field, Reason: "takes a file path, and the value looks like a file's content instead " +
		"(a {file.*} placeholder gives a file's content: give the path itself)"}
}

func looksLikeContent(path string) bool {
	jwt := strings.HasPrefix(path, "eyJ") && strings.Count(path, ".") == 2 && !strings.ContainsAny(path, `/\`)
	return jwt || len(path) > 4096 || strings.ContainsAny(path, "\r\n") || strings.Contains(path, "-----BEGIN")
}

// FileErrorKind describes a failure to read a file without its path: a
// value that passed CheckFilePath may still be content no pattern catches
// (a base64 key, as Kubernetes Secret data holds it), and errors of the os
// package quote the path. The option's name says which file.
func FileErrorKind(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "the file does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	case errors.Is(err, syscall.EISDIR):
		return "the path is a directory"
	case errors.Is(err, syscall.ENOTDIR):
		return "a component of the path is not a directory"
	case errors.Is(err, syscall.ENAMETOOLONG):
		return "the path is too long"
	default:
		return "the file cannot be read"
	}
}
