"""Lock files (what exactly to install, hash-checked) and the wheelhouses downloaded from them."""
