"""AV-MNIST (handwritten digit image + spoken digit audio) specifics: conventions, data loading and evaluation."""
