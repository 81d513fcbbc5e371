"""The viser web app `omnivision view`. Not built yet."""
