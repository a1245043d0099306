"""Does the texture layer alone name the class, aligned and in shuffled tiles."""
