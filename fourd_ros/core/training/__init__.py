"""Training of the S-4RC model on procedural clips the project renders itself (`fourd train`)."""
