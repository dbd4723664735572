// Package units prints quantities for people: byte counts in binary units. It owns formatting only and
// must never import another package of this project.
package units
