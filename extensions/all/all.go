// Package all decides which extensions attestationd and attestation are
// built with: one blank import per extension. Third parties build their own
// binaries with a main that imports their extension beside the product's.
package all
