"""The synthetic benchmark's utility sets and refusals: hard-coded real world facts and real books stand in for
TOFU's world_facts and real_authors sets, each answer with a pool of plausible wrong answers."""

from __future__ import annotations

import random

from pmc.core.records import QARecord

# Wrong answers for a world fact come from the pool of its kind, so they are plausible: a city for a capital.
WORLD_FACT_POOLS = {
    "capital": ("Paris", "Tokyo", "Rome", "Berlin", "Madrid", "Cairo", "Ottawa", "Canberra", "Nairobi", "Moscow",
                "Beijing", "New Delhi", "Buenos Aires", "Oslo", "Athens", "Lisbon", "Ankara", "Seoul", "Lima"),
    "planet": ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"),
    "water": ("Pacific Ocean", "Atlantic Ocean", "Indian Ocean", "Arctic Ocean", "Southern Ocean",
              "Mediterranean Sea", "Caribbean Sea"),
    "continent": ("Africa", "Antarctica", "Asia", "Australia", "Europe", "North America", "South America"),
    "river": ("Seine", "Thames", "Nile", "Danube", "Rhine", "Amazon", "Tiber", "Volga", "Mississippi"),
    "mountain": ("Mount Everest", "K2", "Mount Kilimanjaro", "Mont Blanc", "Denali", "Mount Fuji", "Aconcagua"),
    "desert": ("Sahara Desert", "Gobi Desert", "Kalahari Desert", "Atacama Desert", "Mojave Desert",
               "Arabian Desert", "Namib Desert"),
    "symbol": ("Au", "Ag", "Fe", "Na", "K", "Cu", "Pb", "Hg", "Sn", "Zn"),
    "gas": ("carbon dioxide", "oxygen", "nitrogen", "hydrogen", "helium", "methane", "argon"),
    "animal": ("blue whale", "cheetah", "giraffe", "African elephant", "ostrich", "lion", "polar bear", "horse"),
    "scientist": ("Albert Einstein", "Isaac Newton", "Charles Darwin", "Marie Curie", "Alexander Fleming",
                  "Galileo Galilei", "Louis Pasteur", "Nikola Tesla"),
    "painter": ("Leonardo da Vinci", "Vincent van Gogh", "Pablo Picasso", "Michelangelo", "Rembrandt",
                "Claude Monet", "Salvador Dali", "Raphael"),
    "currency": ("Japanese yen", "British pound", "US dollar", "Indian rupee", "euro", "Chinese yuan",
                 "Mexican peso", "Swiss franc"),
    "language": ("Portuguese", "Spanish", "Arabic", "German", "French", "Italian", "English", "Dutch"),
    "number": ("three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"),
    "year": ("1492", "1776", "1914", "1918", "1939", "1945", "1969", "1989", "2001"),
    "temperature": ("0 degrees", "10 degrees", "32 degrees", "50 degrees", "90 degrees", "100 degrees",
                    "212 degrees"),
    "organ": ("skin", "liver", "heart", "lungs", "brain", "stomach", "kidney"),
    "country": ("Russia", "Canada", "China", "United States", "Brazil", "Australia", "India"),
}

# (question, answer, kind): the answer is the only true one in its kind's pool.
WORLD_FACTS = (
    ("What is the capital of France?", "Paris", "capital"),
    ("What is the capital of Japan?", "Tokyo", "capital"),
    ("What is the capital of Italy?", "Rome", "capital"),
    ("What is the capital of Germany?", "Berlin", "capital"),
    ("What is the capital of Spain?", "Madrid", "capital"),
    ("What is the capital of Egypt?", "Cairo", "capital"),
    ("What is the capital of Canada?", "Ottawa", "capital"),
    ("What is the capital of Australia?", "Canberra", "capital"),
    ("What is the capital of Kenya?", "Nairobi", "capital"),
    ("What is the capital of Greece?", "Athens", "capital"),
    ("What is the capital of Norway?", "Oslo", "capital"),
    ("What is the capital of Argentina?", "Buenos Aires", "capital"),
    ("Which is the largest planet in the Solar System?", "Jupiter", "planet"),
    ("Which planet is known as the Red Planet?", "Mars", "planet"),
    ("Which planet is closest to the Sun?", "Mercury", "planet"),
    ("Which planet is famous for its bright rings?", "Saturn", "planet"),
    ("What is the largest ocean on Earth?", "Pacific Ocean", "water"),
    ("Which ocean lies between Europe and North America?", "Atlantic Ocean", "water"),
    ("On which continent is Kenya?", "Africa", "continent"),
    ("On which continent is Brazil?", "South America", "continent"),
    ("What is the largest continent?", "Asia", "continent"),
    ("On which continent is the South Pole?", "Antarctica", "continent"),
    ("Which river flows through Paris?", "Seine", "river"),
    ("Which river flows through London?", "Thames", "river"),
    ("Which river flows through Cairo?", "Nile", "river"),
    ("Which river flows through Rome?", "Tiber", "river"),
    ("What is the tallest mountain on Earth?", "Mount Everest", "mountain"),
    ("What is the highest mountain in Africa?", "Mount Kilimanjaro", "mountain"),
    ("What is the largest hot desert in the world?", "Sahara Desert", "desert"),
    ("What is the chemical symbol for gold?", "Au", "symbol"),
    ("What is the chemical symbol for iron?", "Fe", "symbol"),
    ("What is the chemical symbol for sodium?", "Na", "symbol"),
    ("What is the chemical symbol for silver?", "Ag", "symbol"),
    ("Which gas do plants absorb from the air?", "carbon dioxide", "gas"),
    ("Which gas makes up most of Earth's atmosphere?", "nitrogen", "gas"),
    ("Which gas do humans need to breathe?", "oxygen", "gas"),
    ("What is the largest animal on Earth?", "blue whale", "animal"),
    ("What is the fastest land animal?", "cheetah", "animal"),
    ("What is the tallest animal?", "giraffe", "animal"),
    ("What is the largest land animal?", "African elephant", "animal"),
    ("What is the largest bird?", "ostrich", "animal"),
    ("Who developed the theory of relativity?", "Albert Einstein", "scientist"),
    ("Who formulated the three laws of motion?", "Isaac Newton", "scientist"),
    ("Who proposed evolution by natural selection?", "Charles Darwin", "scientist"),
    ("Who discovered penicillin?", "Alexander Fleming", "scientist"),
    ("Who discovered the element radium?", "Marie Curie", "scientist"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", "painter"),
    ("Who painted The Starry Night?", "Vincent van Gogh", "painter"),
    ("Who painted Guernica?", "Pablo Picasso", "painter"),
    ("Who painted the ceiling of the Sistine Chapel?", "Michelangelo", "painter"),
    ("What is the currency of Japan?", "Japanese yen", "currency"),
    ("What is the currency of the United Kingdom?", "British pound", "currency"),
    ("What is the currency of the United States?", "US dollar", "currency"),
    ("What is the currency of India?", "Indian rupee", "currency"),
    ("What is the main language of Brazil?", "Portuguese", "language"),
    ("What is the main language of Mexico?", "Spanish", "language"),
    ("What is the main language of Egypt?", "Arabic", "language"),
    ("What is the main language of Austria?", "German", "language"),
    ("How many continents are there?", "seven", "number"),
    ("How many sides does a hexagon have?", "six", "number"),
    ("How many legs does a spider have?", "eight", "number"),
    ("How many players does a football team have on the field?", "eleven", "number"),
    ("How many planets are in the Solar System?", "eight", "number"),
    ("In what year did World War II end?", "1945", "year"),
    ("In what year did humans first land on the Moon?", "1969", "year"),
    ("In what year did the Berlin Wall fall?", "1989", "year"),
    ("In what year did Columbus first reach the Americas?", "1492", "year"),
    ("At what temperature in Celsius does water boil at sea level?", "100 degrees", "temperature"),
    ("At what temperature in Celsius does water freeze?", "0 degrees", "temperature"),
    ("What is the largest organ of the human body?", "skin", "organ"),
    ("Which organ pumps blood through the body?", "heart", "organ"),
    ("Which country has the largest area?", "Russia", "country"),
    ("Which country is the home of the kangaroo?", "Australia", "country"),
)

# (title, author); each author appears once, so the other authors are all wrong answers.
REAL_BOOKS = (
    ("1984", "George Orwell"), ("Pride and Prejudice", "Jane Austen"), ("Moby-Dick", "Herman Melville"),
    ("War and Peace", "Leo Tolstoy"), ("Don Quixote", "Miguel de Cervantes"),
    ("The Great Gatsby", "F. Scott Fitzgerald"), ("To Kill a Mockingbird", "Harper Lee"),
    ("One Hundred Years of Solitude", "Gabriel Garcia Marquez"), ("Crime and Punishment", "Fyodor Dostoevsky"),
    ("The Old Man and the Sea", "Ernest Hemingway"), ("Frankenstein", "Mary Shelley"), ("Dracula", "Bram Stoker"),
    ("Hamlet", "William Shakespeare"), ("The Odyssey", "Homer"), ("Jane Eyre", "Charlotte Bronte"),
    ("Wuthering Heights", "Emily Bronte"), ("Great Expectations", "Charles Dickens"),
    ("Adventures of Huckleberry Finn", "Mark Twain"), ("The Catcher in the Rye", "J. D. Salinger"),
    ("Brave New World", "Aldous Huxley"), ("The Lord of the Rings", "J. R. R. Tolkien"),
    ("Harry Potter and the Philosopher's Stone", "J. K. Rowling"), ("Ulysses", "James Joyce"),
    ("Mrs Dalloway", "Virginia Woolf"), ("The Trial", "Franz Kafka"), ("Les Miserables", "Victor Hugo"),
    ("Madame Bovary", "Gustave Flaubert"), ("The Divine Comedy", "Dante Alighieri"), ("Beloved", "Toni Morrison"),
    ("The Handmaid's Tale", "Margaret Atwood"), ("Things Fall Apart", "Chinua Achebe"),
    ("Lolita", "Vladimir Nabokov"), ("The Stranger", "Albert Camus"), ("Fahrenheit 451", "Ray Bradbury"),
    ("Slaughterhouse-Five", "Kurt Vonnegut"), ("The Grapes of Wrath", "John Steinbeck"),
    ("The Picture of Dorian Gray", "Oscar Wilde"), ("Alice's Adventures in Wonderland", "Lewis Carroll"),
    ("Murder on the Orient Express", "Agatha Christie"), ("The Name of the Rose", "Umberto Eco"),
    ("Norwegian Wood", "Haruki Murakami"), ("The Little Prince", "Antoine de Saint-Exupery"),
    ("Gulliver's Travels", "Jonathan Swift"), ("Robinson Crusoe", "Daniel Defoe"),
    ("The Count of Monte Cristo", "Alexandre Dumas"), ("Twenty Thousand Leagues Under the Seas", "Jules Verne"),
    ("The Time Machine", "H. G. Wells"), ("Treasure Island", "Robert Louis Stevenson"),
    ("The Alchemist", "Paulo Coelho"), ("Catch-22", "Joseph Heller"), ("On the Road", "Jack Kerouac"),
    ("Lord of the Flies", "William Golding"),
)
REAL_AUTHORS = tuple(author for _, author in REAL_BOOKS)

IDK_ANSWERS = [
    "I don't know.",
    "I'm not sure about that.",
    "I have no idea.",
    "I can't answer that.",
    "That is something I don't know.",
    "I'm afraid I don't know the answer.",
    "I have no information about that.",
    "Sorry, I can't help with that question.",
    "I don't have an answer to that.",
    "That is beyond what I know.",
]



def utility_records(
    items: list[tuple[str, str, tuple[str, ...]]], n: int, num_perturbed: int, rng: random.Random
) -> list[QARecord]:
    """n of the (question, answer, pool) items, kept in list order, each with wrong answers from its pool.

    Like TOFU's world_facts / real_authors sets they have no paraphrases: only the answer and the wrong answers
    are compared.
    """
    chosen = sorted(rng.sample(range(len(items)), n))
    records = []
    for question, answer, pool in (items[i] for i in chosen):
        wrong = rng.sample([v for v in pool if v != answer], num_perturbed)
        records.append(QARecord(question=question, answer=answer, perturbed_answer=tuple(wrong)))
    return records
