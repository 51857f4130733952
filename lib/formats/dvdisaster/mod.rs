//! dvdisaster error-correction data (RS01 `.ecc` files, RS02 augmented images, RS03 both).
pub mod layout;
pub mod rs;
