"""The Textual app: the product's face. The only package that imports Textual."""
